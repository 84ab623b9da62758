rule split:
    input:
        shards=expand("data/process/shards/{shard}.csv", shard=SHARDS),
        code=CODE["split"],
    output:
        train="data/split/train.csv",
        val="data/split/val.csv",
        test="data/split/test.csv",
        counts="data/split/counts.csv",
    params:
        cfg=PARAMS,
        split=config["split"],
        seed=config["seed"],
    conda:
        ENV
    log:
        "logs/split.log",
    shell:
        cli("soundstage --params {params.cfg} split {input.shards} --out-dir data/split")
