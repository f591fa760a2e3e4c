"""How good is a model: the auto-eval suites and the promotion gate's decision (seeds 002, 003).

    answers.py   greedy answers of a model (+ adapter) to a question set
    suites.py    held-out rewards, multiple choice, safety (red team), dialogue metrics
    mc.py        multiple-choice sets and answer parsing
    gate.py      the gate: champion vs challenger with noise and safety margins
    card.py      the model card and changelog lines

May import: the base modules, teacher, rewards, codebook, feedback, loop, training, stages, config,
labelling. Never release, jobs or Prefect.
"""
