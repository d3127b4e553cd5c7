"""Aggregator: level-2 Redis hashes (price-level clusters and 1-minute buckets) with a 1 h TTL."""
