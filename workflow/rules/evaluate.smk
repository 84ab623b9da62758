rule evaluate:
    input:
        unpack(get_evaluate_inputs),
    output:
        metrics="reports/evaluate/{model}/metrics.json",
        confusion=expand("reports/evaluate/{{model}}/confusion_{split}.{ext}", split=["val", "test"], ext=["json", "png"]),
        predictions=expand("reports/evaluate/{{model}}/predictions_{split}.csv", split=["val", "test"]),
    params:
        cfg=PARAMS,
    conda:
        ENV
    log:
        "logs/evaluate/{model}.log",
    shell:
        cli("soundstage --params {params.cfg} evaluate --bundle {input.bundle} --out-dir reports/evaluate/{wildcards.model}")


rule metrics:
    input:
        expand("reports/evaluate/{model}/metrics.json", model=MODELS),
    output:
        "reports/metrics.json",
    params:
        cfg=PARAMS,
    conda:
        ENV
    log:
        "logs/metrics.log",
    shell:
        cli("soundstage --params {params.cfg} evaluate --summary --inputs {input} --out {output}") + " && cat {log}"
