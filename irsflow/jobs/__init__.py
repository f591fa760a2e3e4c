"""Training jobs over a job directory: which job, in what state, how its rounds run, and what a rerun may skip.

    job.py      create (preflight: schema, question set, model, adapter, the stage's files), open,
                status and metrics (the read API), the request a job was made with
    rounds.py   the job loop: the phase table (``run_phase``), rounds until done or stopped early,
                the final adapter; and its in-process runner (``run_job_local``)
    results.py  typed results of a round and a job (``RoundResult``, ``JobResult``)
    finish.py   early stop after a round, and which round's adapter becomes final
    resume.py   each round's inputs from the job dir, each phase's content cache key, output hashes
    charts.py   per-round table rows and the reward/weight trend chart

    store = create_job(request)
    job = run_job_local(store, job_request(store))          # the Prefect flow: flows/train.py
    key = phase_key(store, job_request(store), 1, "TRAINING")

The top of the library: may import every other package (it resolves registry adapters through
``irsflow.release``); never Prefect, ``tasks``, ``flows`` or ``deployments``.
"""
