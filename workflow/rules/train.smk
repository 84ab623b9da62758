rule train:
    input:
        unpack(get_train_inputs),
    output:
        directory("models/{model}"),
    log:
        "logs/train/{model}.log",
    conda:
        ENV
    threads: 2
    params:
        cfg=PARAMS,
        watched=get_train_params,
    shell:
        cli("soundstage --params {params.cfg} train --model {wildcards.model} --out-dir {output} --threads {threads}")
