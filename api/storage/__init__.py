"""Postgres: the embedded or configured cluster and its pool, the append-only migration list, SQL as
named statements, and the procrastinate job queue that lives in the same database."""
