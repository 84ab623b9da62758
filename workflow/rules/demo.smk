if is_demo():

    rule demo:
        input:
            code=CODE["demo"],
        output:
            directory(DEMO_ROOT),
        params:
            cfg=PARAMS,
            demo=config["demo"],
            seed=config["seed"],
        conda:
            ENV
        log:
            "logs/demo.log",
        shell:
            cli("soundstage --params {params.cfg} demo --out {output}")
