rule evaluate:
    input:
        unpack(get_evaluate_inputs),
    output:
        metrics="reports/evaluate/{model}/metrics.json",
        confusion=expand(
            "reports/evaluate/{{model}}/confusion_{split}.{ext}", split=["val", "test"], ext=["json", "png"]
        ),
        predictions=expand("reports/evaluate/{{model}}/predictions_{split}.csv", split=["val", "test"]),
    log:
        "logs/evaluate/{model}.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("evaluate"),
    shell:
        cli(
            "soundstage --params {params.cfg} evaluate --bundle {input.bundle} --out-dir reports/evaluate/{wildcards.model}"
        )


rule metrics:
    input:
        metrics=expand("reports/evaluate/{model}/metrics.json", model=MODELS),
        code=CODE["metrics"],
    output:
        "reports/metrics.json",
    log:
        "logs/metrics.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
    shell:
        cli("soundstage --params {params.cfg} evaluate --summary --inputs {input.metrics} --out {output}")
        + " && cat {log}"
