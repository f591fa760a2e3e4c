"""Operating irsflow on Prefect: the local stack, health checks and the job API (Prefect-side code)."""
