rule stats:
    input:
        shards=expand("data/features/shards/{shard}.parquet", shard=SHARDS),
        folds="data/split/folds.csv",
        code=CODE["stats"],
    output:
        npz="data/stats/{fold}/logmel.npz",
        json="data/stats/{fold}/logmel.json",
    log:
        "logs/stats/{fold}.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("stats"),
    shell:
        cli(
            "soundstage --params {params.cfg} stats {input.shards} --folds {input.folds} --fold {wildcards.fold} --out-dir data/stats/{wildcards.fold}"
        )
