"""TargetSettings: the one definition of a target's fields, shared by the core and the blocks.

Each engine defines its settings once, as a subclass of TargetSettings in its own package
(`vaultflow/engines/<engine>/settings.py`): every field with its default and description. The
engine takes those settings; the Prefect block of the target kind (blocks/) *is* the settings,
as a subclass of them (`class PostgresTarget(PostgresSettings, TargetBlock)`), so nothing is
copied and the two cannot drift.

A settings class also answers which strategies its targets can run (`misfit`): the flows apply
that rule when they start and `deployments/validate.py` applies it to saved blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, WithJsonSchema

from vaultflow.alerts import DEFAULT_ARCHIVE_LAG_MINUTES
from vaultflow.engines import registry
from vaultflow.errors import ConfigError

# An optional secret (a password) as a block form must show it: one masked text box. Pydantic
# writes `SecretStr | None` as anyOf [password string, null], which Prefect's block form shows as a
# choice of types whose text box is not masked while typed; this schema is the one masked string
# box (leaving it empty keeps None). Prefect still lists the field in the block's secret_fields.
OptionalSecret = Annotated[
    SecretStr | None, WithJsonSchema({"type": "string", "format": "password", "writeOnly": True})
]

# Strategies whose targets are restricted, as the flows name them.
INCREMENTAL, DIFFERENTIAL, ARCHIVE_LOGS = "incremental", "differential", "archive-logs"
# The other strategies that work on a target's server (verify and prune read the repository only).
FULL, DRILL, RESTORE = "full", "drill", "restore"


class RestoreOptions(BaseModel):
    """Base of every engine's restore options: what its restores take beyond the generic
    parameters (backup_id, into, overwrite, databases). Each engine subclasses it with typed,
    described fields and names the subclass as its engine class's `restore_options`; unknown
    options are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_target_name(name: str) -> str:
    """`name` if it can name a target in the repository layout, logs and restore_command lines.

    Any text is allowed (the repository percent-encodes it, see docs/repository-format.md)
    except control characters. Raises ConfigError for a name with control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(
            f"target name {name!r} contains control characters (line breaks, tabs...): "
            "set a target_name without them on the target block"
        )
    return name


class TargetSettings(BaseModel):
    """Base of every engine's target settings.

    Subclasses set `engine_name` (the registry's name of their engine, see
    vaultflow.engines.registry) and `strategy_fits` (strategy -> which targets of this kind can run
    it, a phrase for messages such as "a physical PostgreSQL target (mode='physical')"); they
    override `misfit` for rules on their fields and `server_misfit` for rules only the server
    can answer. Unknown fields are refused (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid")

    engine_name: ClassVar[str]
    strategy_fits: ClassVar[dict[str, str]] = {}
    # Connection URLs for one-off targets (from_url): their schemes, the field the URL's user
    # goes to, and the environment variables the engine's own tools read a password from.
    url_schemes: ClassVar[tuple[str, ...]] = ()
    url_user_field: ClassVar[str] = "username"
    password_env: ClassVar[tuple[str, ...]] = ()
    passfile_hint: ClassVar[str] = ""  # the engine's usual password file, for login_hint
    # Made from a connection URL (vaultflow.cli_run.url_target), not a block: login_hint says so.
    _from_url: bool = PrivateAttr(default=False)

    target_name: str | None = Field(
        default=None, description="Name of this target in the repository layout; default: the block's name."
    )
    rpo_hours: float = Field(
        default=26.0,
        gt=0,
        description=(
            "Recovery point objective in hours: the newest restorable point (backup, or archived WAL "
            "segment / oplog slice) may be at most this old. Default 26: a daily backup plus slack."
        ),
    )
    archive_lag_alert_minutes: float = Field(
        default=DEFAULT_ARCHIVE_LAG_MINUTES,
        gt=0,
        description=(
            "Targets that archive their log (WAL, oplog): an archive-logs run that leaves a unit waiting "
            "longer than this many minutes emits vaultflow.archive.lagging (the archive-lagging alert)."
        ),
    )

    @property
    def name(self) -> str:
        """The target's name in the repository layout: target_name, else the name these settings
        were saved under (a Prefect block's name, see saved_name), else default_name().

        Raises ConfigError for a name with control characters."""
        return check_target_name(self.target_name or self.saved_name() or self.default_name())

    def login_hint(self, *fields: str) -> str:
        """What to check when the server refuses this target's login, in words for how the
        target was given: a URL's user (and `fields`, query parameters) and where its password
        comes from (VAULTFLOW_PASSWORD, the engine's variables, its password file); else the
        user, password and `fields` of the target block (named when saved)."""
        if self._from_url:
            where = " or ".join(("VAULTFLOW_PASSWORD", *self.password_env))
            where += f", or {self.passfile_hint}" if self.passfile_hint else ""
            return f"check the user{''.join(f'/{f}' for f in fields)} in the URL and the password in {where}"
        return f"check the {'/'.join((self.url_user_field, 'password', *fields))} of the {self._kind_label()}"

    def setting_hint(self, field: str) -> str:
        """Where the user sets `field` of this target, in words for how the target was given:
        "the database list in the URL's path" / "the URL's ?bin_dir=" for a URL target, else
        "the PostgresTarget block 'prod''s databases" (the block named when saved)."""
        if self._from_url:
            return "the database list in the URL's path" if field == "databases" else f"the URL's ?{field}="
        return f"the {self._kind_label()}'s {field}"

    def _kind_label(self) -> str:
        """'PostgresTarget block 'prod'' (a saved block), else the class name: how hints name it."""
        saved = self.saved_name()
        return type(self).__name__ + (f" block {saved!r}" if saved else "")

    def saved_name(self) -> str | None:
        """The name a wrapper saved these settings under; None for plain settings (a target block
        answers with its block document's name)."""
        return None

    def default_name(self) -> str:
        """The name of an unnamed target: `<host>-<port>` when the settings have those fields."""
        host, port = getattr(self, "host", None), getattr(self, "port", None)
        if host is None:
            raise ConfigError(f"a {self.engine_name} target needs a target_name")
        return f"{host}-{port}" if port is not None else str(host)

    def listed_databases(self) -> tuple[str, ...]:
        """The databases these settings name (a `databases` field: PostgreSQL, MongoDB,
        ClickHouse); () for kinds without one, or when the list is empty (every database)."""
        return tuple(getattr(self, "databases", None) or ())

    def engine(self) -> Any:
        """This target's engine (an object satisfying vaultflow.engines.base.Engine), made by its
        engine's registry entry. Raises ConfigError when the engine is not known."""
        return registry.spec(self.engine_name).make_engine(self)

    @classmethod
    def url_fields(cls, url: str) -> dict[str, Any]:
        """The settings a connection URL of this kind gives ('postgresql://backup@db1:5432/shop,crm?mode=physical'):
        host, port, the user (url_user_field), the path's comma-separated databases (for kinds
        with a `databases` field), each query parameter as the field of its name (camelCase read
        as snake_case: authSource -> auth_source). Raises ConfigError for a password in the URL
        (the message does not repeat it), a path on a kind without databases, or an unknown
        query parameter (naming the fields there are)."""
        import re
        from urllib.parse import parse_qsl, unquote, urlsplit

        parts = urlsplit(url)
        if parts.password is not None:
            raise ConfigError(
                f"the {parts.scheme}:// URL carries a password: on a command line it is visible to every "
                "user of this host (ps, /proc/<pid>/cmdline) and stays in shell history; give the URL "
                f"without it and the password in {' or '.join((*cls.password_env, 'VAULTFLOW_PASSWORD'))}"
            )
        fields: dict[str, Any] = {"host": parts.hostname or "localhost"}
        if parts.port is not None:
            fields["port"] = parts.port
        if parts.username:
            fields[cls.url_user_field] = unquote(parts.username)
        path = unquote(parts.path.strip("/"))
        if path:
            if "databases" not in cls.model_fields:
                raise ConfigError(
                    f"a {parts.scheme}:// target names no database ({path!r}): a {cls.engine_name} backup holds every one"
                )
            fields["databases"] = [name for name in path.split(",") if name]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
            if name not in cls.model_fields or name == "password":
                raise ConfigError(
                    f"{key!r} in the {parts.scheme}:// URL is no setting of a {cls.engine_name} target "
                    f"(settings: {', '.join(n for n in cls.model_fields if n != 'password')})"
                )
            fields[name] = value
        return fields

    @classmethod
    def passfile_password(cls, fields: Mapping[str, Any]) -> str | None:
        """The password the engine's usual password file holds for a target of these `fields`
        (url_fields' result), or None: no such file for this kind (the default), or no entry."""
        return None

    @classmethod
    def kind_misfit(cls, strategy: str) -> str | None:
        """Why no target of this kind can run `strategy`, whatever its fields; None when some can
        (those named in strategy_fits)."""
        return None if strategy in cls.strategy_fits else f"a {cls.engine_name} target has no {strategy} form"

    def misfit(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Why this target cannot run `strategy` ('incremental', 'differential', 'archive-logs'),
        judged from its fields and the flow's other `parameters` (e.g. spool_dir); None when it
        can. The default: kind_misfit, said of this target."""
        why = self.kind_misfit(strategy)
        return None if why is None else f"{self.name}: {why}"

    def server_misfit(self, strategy: str) -> str | None:
        """Why the server (not the fields) keeps this target from running `strategy`; None when it
        fits or the server cannot be asked (the backup itself then reports that). Default: None."""
        return None

    def runtime_condition(self, strategy: str) -> str | None:
        """What server_misfit will still check at run time for a target whose fields fit, as a
        clause for notes ("its server has appendonly yes"); None when nothing is left to check."""
        return None

    def local_access(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """What `strategy` on this target reads or writes on the database host's own filesystem,
        as a phrase for messages ("the WAL spool /var/spool/pg"): its runs belong on a worker on
        that host (a fleet puts them on the host's work queue, deployments/fleet.py). None when
        any worker that reaches the server over the network can run it (the default).

        `strategy` is one of full, incremental, differential, archive-logs, drill, restore,
        verify, prune; `parameters` are the flow's other parameters (e.g. spool_dir)."""
        return None
