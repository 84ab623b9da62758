rule report:
    input:
        "data/ingest/manifest.csv",
        "data/split/counts.csv",
        expand("data/process/shards/{shard}.rejected.csv", shard=SHARDS),
        expand("data/features/shards/{shard}.rejected.csv", shard=SHARDS),
        CODE["report"],
    output:
        "reports/dataset/report.md",
    params:
        cfg=PARAMS,
        max_rejected_share=config["data"]["max_rejected_share"],
    conda:
        ENV
    log:
        "logs/report.log",
    shell:
        cli("soundstage --params {params.cfg} report --out-dir reports/dataset")
