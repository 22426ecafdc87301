"""Policy: the Rego library, compile checks, engines and decisions. Knows no HTTP."""
