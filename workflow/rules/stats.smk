rule stats:
    input:
        shards=expand("data/features/shards/{shard}.parquet", shard=SHARDS),
        train="data/split/train.csv",
        code=CODE["stats"],
    output:
        npz="data/stats/logmel.npz",
        json="data/stats/logmel.json",
    params:
        cfg=PARAMS,
        stats=config["stats"],
    conda:
        ENV
    log:
        "logs/stats.log",
    shell:
        cli("soundstage --params {params.cfg} stats {input.shards} --train {input.train} --out-dir data/stats")
