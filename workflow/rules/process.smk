rule process:
    input:
        manifest="data/ingest/manifest.csv",
        code=CODE["process"],
    output:
        index="data/process/shards/{shard}.csv",
        rejected="data/process/shards/{shard}.rejected.csv",
    log:
        "logs/process/{shard}.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=stage_params("process"),
    shell:
        cli(
            "soundstage --params {params.cfg} --n-shards {params.n_shards} process --shard {wildcards.shard} --manifest {input.manifest} --out-dir data/process"
        )
