# A self-contained bundle (bundle.json + model file), with its training curves (history.csv, and
# training_curves.png for the Keras models) beside it.
rule train:
    input:
        unpack(get_train_inputs),
    output:
        report(
            directory("models/{model}/folds/{fold}"),
            patterns=["{figure}.png"],
            caption="../report/training_curves.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "training curves, fold {fold}"},
        ),
    log:
        "logs/train/{model}/{fold}.log",
    conda:
        ENV
    threads: 2
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=get_train_params,
    shell:
        cli(
            "soundstage --params {params.cfg} --n-shards {params.n_shards} train --model {wildcards.model} --fold {wildcards.fold} --folds {input.folds} --manifest {input.manifest} --stats data/stats/{wildcards.fold}/logmel.npz --out-dir {output} --threads {threads}"
        )
