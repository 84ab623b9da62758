rule process:
    input:
        manifest="data/ingest/manifest.csv",
        code=CODE["process"],
    output:
        index="data/process/shards/{shard}.csv",
        rejected="data/process/shards/{shard}.rejected.csv",
    params:
        cfg=PARAMS,
        process=config["process"],
    conda:
        ENV
    log:
        "logs/process/{shard}.log",
    shell:
        cli("soundstage --params {params.cfg} process --shard {wildcards.shard} --manifest {input.manifest} --out-dir data/process")
