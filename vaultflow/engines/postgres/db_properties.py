"""A PostgreSQL database's own properties: read them, recreate a database with them, compare.

pg_dump's archive holds what is *inside* a database; encoding, locale, owner, database ACL,
connection limit, comment and `ALTER DATABASE / ALTER ROLE ... IN DATABASE ... SET` settings
belong to the database itself (pg_restore applies them only with --create, under the original
name). vaultflow records them in the manifest at backup time (`DatabaseProperties`) and
recreates them under any name.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from vaultflow.compare import TableComparison
from vaultflow.engines.postgres.consistency import DatabaseProperties
from vaultflow.errors import ConfigError, clause

PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}
# Settings whose value is a list of names, split and quoted element by element (as pg_dump's
# variable_is_guc_list_quote): a single literal would become one name "a, b".
LIST_SETTINGS = {
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
}
PROPERTIES_ROW = "(database properties)"


def read_properties(conn: psycopg.Connection, database: str) -> DatabaseProperties | None:
    """The properties of `database` as the server has them now; None when it does not exist.

    `conn`: any connection to the server (the catalogs read are shared)."""
    major = conn.info.server_version // 10000
    provider = "d.datlocprovider::text" if major >= 15 else "'c'"
    locale = "d.datlocale" if major >= 17 else ("d.daticulocale" if major >= 15 else "NULL")
    rules = "d.daticurules" if major >= 16 else "NULL"
    row = conn.execute(
        sql.SQL(  # the column names above are fixed text, not input
            f"""SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, {locale}, {rules},
                   pg_get_userbyid(d.datdba),
                   CASE WHEN d.datacl IS NULL THEN NULL ELSE array(SELECT unnest(d.datacl)::text) END,
                   d.datconnlimit, shobj_description(d.oid, 'pg_database'),
                   array(SELECT x FROM pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY u(x, n)
                          WHERE s.setdatabase = d.oid AND s.setrole = 0 ORDER BY n),
                   d.oid
            FROM pg_database d WHERE d.datname = %s"""
        ),
        (database,),
    ).fetchone()
    if row is None:
        return None
    role_rows = conn.execute(
        "SELECT pg_get_userbyid(setrole), setconfig FROM pg_db_role_setting "
        "WHERE setdatabase = %s AND setrole <> 0 ORDER BY 1",
        (row[11],),
    ).fetchall()
    return DatabaseProperties(
        encoding=row[0],
        collate=row[1],
        ctype=row[2],
        locale_provider=PROVIDERS.get(row[3], row[3]),
        locale=row[4],
        icu_rules=row[5],
        owner=row[6],
        acl=row[7],
        connection_limit=row[8],
        comment=row[9],
        settings=list(row[10]),
        role_settings={role: list(config) for role, config in role_rows},
    )


def create_database(conn: psycopg.Connection, name: str, props: DatabaseProperties | None, source: str) -> None:
    """CREATE DATABASE `name` from template0 with the encoding and locale of `props` (the
    server's defaults when None: manifests written before properties were recorded).

    Raises ConfigError naming `source` (the backed-up database) when the server cannot make it,
    e.g. a locale or ICU support it lacks."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if props is not None:
        major = conn.info.server_version // 10000
        options = [("ENCODING", props.encoding), ("LC_COLLATE", props.collate), ("LC_CTYPE", props.ctype)]
        if major >= 15:
            options.append(("LOCALE_PROVIDER", props.locale_provider))
        elif props.locale_provider != "libc":
            raise ConfigError(
                f"database {source!r} uses the {props.locale_provider} locale provider, which "
                f"PostgreSQL {major} cannot create: restore into PostgreSQL 15 or newer"
            )
        if props.locale_provider == "icu":
            options.append(("ICU_LOCALE", props.locale))
        elif props.locale_provider == "builtin":
            options.append(("BUILTIN_LOCALE", props.locale))
        if props.icu_rules:
            options.append(("ICU_RULES", props.icu_rules))
        query = sql.SQL(" ").join([query] + [sql.SQL("{} {}").format(sql.SQL(k), sql.Literal(v)) for k, v in options])
    try:
        conn.execute(query)
    except psycopg.Error as exc:
        what = (
            (
                f"encoding {props.encoding}, LC_COLLATE {props.collate!r}, LC_CTYPE {props.ctype!r}, "
                f"{props.locale_provider} locale {props.locale!r}"
            )
            if props
            else "the server's defaults"
        )
        raise ConfigError(
            f"cannot create database {name!r} for the restore of {source!r} with {what}: "
            f"{clause(exc)}. The server needs the same locale support as the one backed up "
            "(install the locale or ICU there), or restore into a server that has it"
        ) from exc


def _split_list(value: str) -> list[str]:
    """A list setting's stored text ('a, "My Schema"') as its elements (quotes removed)."""
    items, current, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == '"' and value[i + 1 : i + 2] == '"':
                current += '"'
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    items.append(current.strip())
    return items


def setting_clause(item: str) -> sql.Composed:
    """'name=value' (pg_db_role_setting) as the `SET name = value` clause that stores it again."""
    name, _, value = item.partition("=")
    ident = sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))
    if name.lower() in LIST_SETTINGS and value:
        values: sql.Composable = sql.SQL(", ").join(sql.Literal(v) for v in _split_list(value))
    else:
        values = sql.Literal(value)
    return sql.SQL("SET {} = {}").format(ident, values)


def apply_settings(conn: psycopg.Connection, name: str, props: DatabaseProperties, *, role_settings: bool) -> None:
    """`ALTER DATABASE name SET ...` for each recorded setting (and `ALTER ROLE r IN DATABASE`
    ones when `role_settings`). Applied after the data: `default_transaction_read_only = on`
    or a short statement_timeout would otherwise break the restore itself.

    Raises ConfigError naming the setting (and role) the server refused."""
    db = sql.Identifier(name)
    statements: list[tuple[str, str | None, sql.Composed]] = [
        (item, None, sql.SQL("ALTER DATABASE {} {}").format(db, setting_clause(item))) for item in props.settings
    ]
    if role_settings:
        statements += [
            (
                item,
                role,
                sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(sql.Identifier(role), db, setting_clause(item)),
            )
            for role, items in props.role_settings.items()
            for item in items
        ]
    for item, role, statement in statements:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            whose = f" of role {role!r}" if role else ""
            raise ConfigError(
                f"cannot apply setting {item!r}{whose} to restored database {name!r}: "
                f"{clause(exc)}. Restore as a superuser (or with no_privileges, which "
                "leaves out role-specific settings)"
            ) from exc


def apply_identity(
    conn: psycopg.Connection, name: str, props: DatabaseProperties, *, owner: bool, privileges: bool
) -> None:
    """Owner (when `owner`), ACL in its recorded order (when `privileges`), comment, connection
    limit. The ACL is rebuilt from nothing so that PUBLIC gets back exactly what it had.

    Raises ConfigError naming the role or privilege the server refused."""
    db = sql.Identifier(name)
    try:
        if owner:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(props.owner)))
        if privileges and props.acl is not None:
            _apply_acl(conn, db, props)
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(props.comment)))
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, sql.Literal(props.connection_limit)))
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot give restored database {name!r} the owner {props.owner!r} or privileges "
            f"{props.acl} it had: {clause(exc)}. Create the roles first (the backup's "
            "globals.sql), or restore with no_owner / no_privileges"
        ) from exc


def _apply_acl(conn: psycopg.Connection, db: sql.Identifier, props: DatabaseProperties) -> None:
    owner = sql.Identifier(props.owner)
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, owner))
    for item in props.acl or []:  # GRANT appends a new grantee at the end: the order is kept
        rows = conn.execute(
            "SELECT pg_get_userbyid(grantor), grantee, pg_get_userbyid(grantee), privilege_type, "
            "is_grantable FROM aclexplode(ARRAY[%s::aclitem])",
            (item,),
        ).fetchall()
        for grantable in (False, True):
            privs = [r[3] for r in rows if r[4] == grantable]
            if not privs:
                continue
            grantor, grantee_oid, grantee = rows[0][0], rows[0][1], rows[0][2]
            statement = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in privs),
                db,
                sql.SQL("PUBLIC") if grantee_oid == 0 else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
            )
            if grantor != props.owner:  # granted by a role that holds the grant option
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(grantor)))
                try:
                    conn.execute(statement)
                finally:
                    conn.execute("RESET ROLE")
            else:
                conn.execute(statement)


def compare_properties(
    database: str, expected: DatabaseProperties, actual: DatabaseProperties | None, skip: set[str]
) -> TableComparison:
    """One comparison row for the database's properties: "match", or "mismatch" with the
    differing property names in the row's table column. `skip`: properties not restored on
    purpose (owner with no_owner; acl and role_settings with no_privileges)."""
    if actual is None:
        return TableComparison(database, PROPERTIES_ROW, None, None, "missing")
    differing = [
        key
        for key in DatabaseProperties.model_fields
        if key not in skip and getattr(expected, key) != getattr(actual, key)
    ]
    if not differing:
        return TableComparison(database, PROPERTIES_ROW, None, None, "match")
    return TableComparison(database, f"(database properties: {', '.join(differing)})", None, None, "mismatch")
