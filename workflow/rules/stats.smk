rule stats:
    input:
        shards=expand("data/features/shards/{shard}.parquet", shard=SHARDS),
        train="data/split/train.csv",
        code=CODE["stats"],
    output:
        npz="data/stats/logmel.npz",
        json="data/stats/logmel.json",
    log:
        "logs/stats.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("stats"),
    shell:
        cli("soundstage --params {params.cfg} stats {input.shards} --train {input.train} --out-dir data/stats")
