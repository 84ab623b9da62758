rule ingest:
    input:
        unpack(get_ingest_input),
    output:
        manifest="data/ingest/manifest.csv",
        rejected="data/ingest/rejected.csv",
    params:
        cfg=PARAMS,
        data=config["data"],
        n_shards=config["sharding"]["n_shards"],
        fingerprint=get_data_fingerprint,
    conda:
        ENV
    log:
        "logs/ingest.log",
    shell:
        cli("soundstage --params {params.cfg} ingest --out-dir data/ingest")
