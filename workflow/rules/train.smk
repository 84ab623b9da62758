rule train:
    input:
        unpack(get_train_inputs),
    output:
        directory("models/{model}/folds/{fold}"),
    log:
        "logs/train/{model}/{fold}.log",
    conda:
        ENV
    threads: 2
    params:
        cfg=PARAMS,
        watched=get_train_params,
    shell:
        cli(
            "soundstage --params {params.cfg} train --model {wildcards.model} --fold {wildcards.fold} --folds {input.folds} --manifest {input.manifest} --stats data/stats/{wildcards.fold}/logmel.npz --out-dir {output} --threads {threads}"
        )
