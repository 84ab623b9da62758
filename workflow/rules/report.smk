rule report:
    input:
        "data/ingest/manifest.csv",
        "data/split/counts.csv",
        "data/split/folds.csv",
        expand("data/process/shards/{shard}.rejected.csv", shard=SHARDS),
        expand("data/features/shards/{shard}.rejected.csv", shard=SHARDS),
        code=CODE["report"],
    output:
        "reports/dataset/report.md",
    log:
        "logs/report.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("report"),
    shell:
        cli("soundstage --params {params.cfg} report --out-dir reports/dataset")
