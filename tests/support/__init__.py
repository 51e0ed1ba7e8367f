"""Real servers the tests run against: PostgreSQL, the gateway, upstreams."""
