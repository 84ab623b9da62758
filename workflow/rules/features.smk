rule features:
    input:
        index="data/process/shards/{shard}.csv",
        code=CODE["features"],
    output:
        table="data/features/shards/{shard}.parquet",
        rejected="data/features/shards/{shard}.rejected.csv",
    params:
        cfg=PARAMS,
        features=config["features"],
    conda:
        ENV
    log:
        "logs/features/{shard}.log",
    shell:
        cli("soundstage --params {params.cfg} features --index {input.index} --out-dir data/features")


rule features_table:
    input:
        shards=expand("data/features/shards/{shard}.parquet", shard=SHARDS),
        splits=expand("data/split/{split}.csv", split=["train", "val", "test"]),
        # every stage's rejected files: too large a share stops the run here, before training
        rejected=["data/ingest/manifest.csv", "data/ingest/rejected.csv"]
        + expand("data/{stage}/shards/{shard}.rejected.csv", stage=["process", "features"], shard=SHARDS),
        code=CODE["features"],
    output:
        "data/features/table.parquet",
    params:
        cfg=PARAMS,
        max_rejected_share=config["data"]["max_rejected_share"],
    conda:
        ENV
    log:
        "logs/features/table.log",
    shell:
        cli("soundstage --params {params.cfg} features --table --inputs {input.shards} --splits {input.splits} --out-dir data/features")
