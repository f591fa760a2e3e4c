#!/bin/sh
# Container health check (the images have no curl): exit 0 when URL answers HTTP 2xx within 5 s.
#   sh infra/docker/healthcheck.sh http://127.0.0.1:8080/api/health
exec python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "${1:?usage: healthcheck.sh URL}"
