"""Use cases that compose domains: what the CLI, the server and Python callers share.

Each function here is one thing a user does (initialize a workspace, upgrade its
schema, run the demo); the CLI and the HTTP API are thin layers over these.
"""
