if is_demo():

    rule demo:
        input:
            code=CODE["demo"],
        output:
            directory(DEMO_ROOT),
        log:
            "logs/demo.log",
        conda:
            ENV
        params:
            cfg=PARAMS,
            watched=stage_params("demo"),
        shell:
            cli("soundstage --params {params.cfg} demo --out {output}")
