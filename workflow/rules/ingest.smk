rule ingest:
    input:
        unpack(get_ingest_input),
    output:
        manifest="data/ingest/manifest.csv",
        rejected="data/ingest/rejected.csv",
    log:
        "logs/ingest.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=stage_params("ingest"),
        fingerprint=get_data_fingerprint,
    shell:
        cli("soundstage --params {params.cfg} --n-shards {params.n_shards} ingest --out-dir data/ingest")
