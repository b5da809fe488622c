"""Alembic environment: the engine comes from aliasd.db (config.attributes["engine"])
or from the URL in the config, never from a Flask app."""

from alembic import context
from sqlalchemy import create_engine

from aliasd.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        postgresql = connection.dialect.name == "postgresql"
        if sqlite:
            # SQLite's batch mode copies a table and drops the old one; with foreign keys
            # enforced, dropping a referenced table (users) fails. The pragma only takes
            # effect outside a transaction, so it is set before the migration's begins.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
            # The driver begins a transaction only before INSERT/UPDATE/DELETE, so DDL
            # ran outside any: a failed upgrade left some of its tables and columns behind
            # at the old revision. With the driver's own begin off, the BEGIN below holds
            # every statement, and COMMIT or ROLLBACK ends all of them together.
            driver = connection.connection.dbapi_connection
            driver_isolation = driver.isolation_level
            driver.isolation_level = None
        try:
            with connection.begin():
                # One upgrade at a time: a second one (another host, a shell next to a
                # unit) waits, then finds the schema at head. IMMEDIATE takes SQLite's
                # write lock now, within db_timeout; PostgreSQL's lock is held until commit.
                if sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                elif postgresql:
                    # a migration runs to its end: no statement or lock wait limit for it
                    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                    connection.exec_driver_sql(
                        "SELECT pg_advisory_xact_lock(hashtext('aliasd db upgrade'))"
                    )
                context.configure(
                    connection=connection,
                    target_metadata=target_metadata,
                    render_as_batch=sqlite,
                )
                context.run_migrations()
        finally:
            if sqlite:
                driver.isolation_level = driver_isolation
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
