rule features:
    input:
        index="data/process/shards/{shard}.csv",
        code=CODE["features"],
    output:
        table="data/features/shards/{shard}.parquet",
        rejected="data/features/shards/{shard}.rejected.csv",
    log:
        "logs/features/{shard}.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=stage_params("features"),
    shell:
        cli(
            "soundstage --params {params.cfg} --n-shards {params.n_shards} features --index {input.index} --out-dir data/features"
        )


rule features_table:
    input:
        shards=expand("data/features/shards/{shard}.parquet", shard=SHARDS),
        # every stage's rejected files: too large a share stops the run here, before training
        rejected=["data/ingest/manifest.csv", "data/ingest/rejected.csv"]
        + expand("data/{stage}/shards/{shard}.rejected.csv", stage=["process", "features"], shard=SHARDS),
        code=CODE["features"],
    output:
        "data/features/table.parquet",
    log:
        "logs/features/table.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=stage_params("features", "features_table"),
    shell:
        cli(
            "soundstage --params {params.cfg} --n-shards {params.n_shards} features --table --inputs {input.shards} --out-dir data/features"
        )
