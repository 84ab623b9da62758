rule train:
    input:
        unpack(get_train_inputs),
    output:
        directory("models/{model}"),
    params:
        cfg=PARAMS,
        model=get_model_params,
        augment=config["augment"],
        seed=config["seed"],
        experiment=config["data"]["name"],
    threads: 2
    conda:
        ENV
    log:
        "logs/train/{model}.log",
    shell:
        cli("soundstage --params {params.cfg} train --model {wildcards.model} --out-dir {output} --threads {threads}")
