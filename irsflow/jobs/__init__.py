"""Training jobs over a job directory: which job, in what state, and what a rerun may skip.

    job.py      create (preflight: schema, question set, model, adapter, the stage's files), open,
                status and metrics (seed 000 sections 4.2/4.3), the request a job was made with
    resume.py   each round's inputs from the job dir, each phase's content cache key, output hashes
    charts.py   per-round table rows and the reward/weight trend chart
    local.py    a job's rounds in this process, without Prefect (benchmarks, tests, debugging)

    store = create_job(request)
    key = phase_key(store, job_request(store), 1, "TRAINING")

The top of the library: may import every other package (it resolves registry adapters through
``irsflow.release``); never Prefect, ``tasks``, ``flows`` or ``deployments``.
"""
