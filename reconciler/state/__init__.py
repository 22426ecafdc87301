"""State: the SQL store (tables, engine, migrations, queries). Knows no Git and no policy."""
