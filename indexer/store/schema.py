"""The library database's tables (SQLAlchemy ORM) and their migrations: what a schema version holds,
and how an older library is brought up to it when opened."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..errors import LibraryNotFoundError, LibraryReadOnlyError, SchemaError

SCHEMA_VERSION = 7
# Which of a photo's own facts the indexer reads (images.metadata_version): 1 = date taken, camera,
# lens and GPS position. Rows read with fewer (NULL) are read again by the next `index` run.
METADATA_VERSION = 1
# The first key of the PostgreSQL advisory locks this program takes (pg_locks.classid: "sigl"),
# telling them apart from other programs' locks on the same database; the second names the lock.
LOCK_NAMESPACE = 0x7369676C
SCHEMA_LOCK, GENERATION_LOCK, LIBRARY_LOCK = (
    1,
    2,
    3,
)  # folder locks use hashes from 16 up (locks.py)
LIBRARY_ID_KEY = "library_id"  # a random id made with the database: ties machine-local files to it

# 64-bit ids on a server: 32-bit ones overflow around 200M photos, in the tags table first. On SQLite
# an INTEGER PRIMARY KEY is the 64-bit rowid already, and must stay spelled INTEGER to be its alias.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Paths and tags compare and sort byte by byte, as SQLite does: a server database's own collation
# (en_US.UTF-8 and the like) would order them by language rules, and differently on each server.
PathText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class Root(Base):
    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    path: Mapped[str] = mapped_column(PathText, unique=True)  # absolute, resolved
    added_at: Mapped[datetime] = mapped_column(sa.DateTime)
    # `index --exclude` patterns, a JSON list (see scan.normalized_pattern); NULL: none
    exclude: Mapped[str | None] = mapped_column(sa.Text)
    # What the last scan of the whole root passed over, JSON (rows.PassedOver); NULL: not yet scanned
    passed_over: Mapped[str | None] = mapped_column(sa.Text)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        sa.UniqueConstraint("root_id", "rel_path"),
        # Incremental readers (tagging, the approximate index) ask for rows written since a point.
        sa.Index("ix_images_generation", "generation", "id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    root_id: Mapped[int] = mapped_column(Id, sa.ForeignKey("roots.id", ondelete="CASCADE"))
    # POSIX, relative to the root: moving a root is free
    rel_path: Mapped[str] = mapped_column(PathText)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int] = mapped_column(sa.BigInteger)
    fingerprint: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    taken_at: Mapped[str | None] = mapped_column(sa.String(32))  # EXIF DateTimeOriginal, ISO 8601
    camera: Mapped[str | None] = mapped_column(sa.Text)
    lens: Mapped[str | None] = mapped_column(sa.Text)  # EXIF LensModel (RAW: LibRaw's lens name)
    latitude: Mapped[float | None] = mapped_column(sa.Float)  # EXIF GPS, decimal degrees
    longitude: Mapped[float | None] = mapped_column(sa.Float)
    # METADATA_VERSION when the facts above were read; NULL: before lens and GPS were stored
    metadata_version: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16))  # "ok" | "failed"
    error: Mapped[str | None] = mapped_column(sa.Text)
    model_id: Mapped[str | None] = mapped_column(sa.Text)
    embedding: Mapped[bytes | None] = mapped_column(sa.LargeBinary)  # float32, unit norm
    indexed_at: Mapped[datetime] = mapped_column(sa.DateTime)
    # The generation of the transaction that last wrote the row (see Generation): the position of
    # incremental readers, in commit order even with several writers at once.
    generation: Mapped[int | None] = mapped_column(sa.BigInteger)


class Generation(Base):
    """One row per committed transaction that changed the stored vectors, numbered in commit order:
    the library's vectors generation is the largest. An append-only log rather than one counter
    row that every writer would update (and wait for). Numbers are taken under a lock held to the
    commit (SQLite's write lock, a PostgreSQL advisory lock), so a reader that sees number g has
    every change up to g."""

    __tablename__ = "generations"
    __table_args__ = {"sqlite_autoincrement": True}  # never reuse a number, even after pruning
    generation: Mapped[int] = mapped_column(Id, primary_key=True)
    committed_at: Mapped[datetime] = mapped_column(sa.DateTime)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (sa.UniqueConstraint("image_id", "tag", "source"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        Id, sa.ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(PathText, index=True)
    score: Mapped[float | None] = mapped_column(sa.Float)  # machine tags: SigLIP probability
    source: Mapped[str] = mapped_column(sa.String(32))  # "auto" | "user" | ...
    model: Mapped[str | None] = mapped_column(sa.Text)
    vocabulary_version: Mapped[str | None] = mapped_column(sa.String(64))


class TagRejection(Base):
    """A machine tag the user rejected for one photo: `tag` never proposes it again, `export` never
    writes it again."""

    __tablename__ = "tag_rejections"
    __table_args__ = (sa.UniqueConstraint("image_id", "tag"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        Id, sa.ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    # the machine tag's name as stored in tags ("animal|dog")
    tag: Mapped[str] = mapped_column(PathText)
    source: Mapped[str] = mapped_column(sa.String(16))  # "sidecar" | "user" (REJECTION_SOURCES)
    rejected_at: Mapped[datetime] = mapped_column(sa.DateTime)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(sa.DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime)
    status: Mapped[str] = mapped_column(sa.String(16))  # "running" | "ok" | "interrupted"
    # the folders given, a JSON list (see _run_roots)
    roots: Mapped[str | None] = mapped_column(sa.Text)
    added: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    moved: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    removed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    failed: Mapped[int] = mapped_column(sa.BigInteger, default=0)


def _add_tags_table(conn: sa.Connection) -> None:
    Base.metadata.tables[Tag.__tablename__].create(conn, checkfirst=True)


def _add_tag_rejections_table(conn: sa.Connection) -> None:
    Base.metadata.tables[TagRejection.__tablename__].create(conn, checkfirst=True)


def _add_columns(conn: sa.Connection, table: str, names: tuple[str, ...]) -> None:
    """ALTER TABLE for columns a later version added (types as the ORM declares them); a column
    already there is left alone."""
    present = {column["name"] for column in sa.inspect(conn).get_columns(table)}
    for name in names:
        if name not in present:
            kind = Base.metadata.tables[table].c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


def _add_lens_and_position(conn: sa.Connection) -> None:
    """Photos indexed before have none (None) until their file changes or they are indexed again."""
    _add_columns(conn, "images", ("lens", "latitude", "longitude"))


def _add_root_exclude_and_passed_over(conn: sa.Connection) -> None:
    _add_columns(conn, "roots", ("exclude", "passed_over"))


def _add_metadata_version(conn: sa.Connection) -> None:
    """Rows indexed before get NULL: `index` reads their lens and GPS position once (metadata.py)."""
    _add_columns(conn, "images", ("metadata_version",))


def _add_generations(conn: sa.Connection) -> None:
    """Version 2 counted vector changes in one `meta` row. The count carries over as the first
    generation (generations only ever grow) and every stored row is stamped with it; the
    positions incremental readers saved (the approximate index, the tagger) were (indexed_at, id)
    and are read as "start over" from now on. The library also gets its id, which the FAISS
    files do not name yet: they are rebuilt once. A database that has the column already (a
    version number set back by hand) is left as it is."""
    if "generation" in {column["name"] for column in sa.inspect(conn).get_columns("images")}:
        return
    counter = conn.execute(sa.select(Meta.value).where(Meta.key == "vectors_generation")).scalar()
    generation = int(counter or 0)
    Base.metadata.tables[Generation.__tablename__].create(conn, checkfirst=True)
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN generation BIGINT"))
    conn.execute(sa.update(Image).values(generation=generation))
    if generation:
        conn.execute(sa.insert(Generation).values(generation=generation, committed_at=_utcnow()))
    conn.execute(sa.delete(Meta).where(Meta.key == "vectors_generation"))
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_images_indexed_at"))
    conn.execute(sa.insert(Meta).values(key=LIBRARY_ID_KEY, value=uuid.uuid4().hex))


# MIGRATIONS[v] upgrades a database at schema version v to v + 1, inside one transaction.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: _add_tags_table,
    2: _add_tag_rejections_table,
    3: _add_lens_and_position,
    4: _add_root_exclude_and_passed_over,
    5: _add_metadata_version,
    6: _add_generations,
}


def is_read_only(engine: sa.Engine) -> bool:
    """Opened with mode=ro (see connect.py): every write would fail."""
    return engine.url.query.get("mode") == "ro"


def database_name(engine: sa.Engine) -> str:
    """The database file's path, or a server database's URL without its password, for messages."""
    if engine.dialect.name != "sqlite":
        return shown_url(engine.url)
    return unquote(str(engine.url.database or "").removeprefix("file:"))


def shown_url(url: sa.URL) -> str:
    """A server URL as messages show it: driver and password left out."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def migrate(engine: sa.Engine, create: bool = True) -> int:
    """Create a fresh schema (when `create`) or run MIGRATIONS up to SCHEMA_VERSION; return the
    version found. On a server, processes opening one new library at once take turns."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_NAMESPACE, SCHEMA_LOCK)))
        tables = set(sa.inspect(conn).get_table_names())
        if "meta" not in tables:
            if tables:
                raise SchemaError(
                    f"{database_name(engine)} is a database but not a siglip-search library"
                )
            if not create:
                raise LibraryNotFoundError(
                    f"the database {database_name(engine)} holds no library yet; index photos into it first: "
                    "siglip-search index FOLDER --database URL"
                )
            if is_read_only(engine):
                raise LibraryReadOnlyError(
                    os.path.dirname(database_name(engine)),
                    "library.db is empty",
                    "a new library must be set up",
                )
            Base.metadata.create_all(conn)
            conn.execute(
                sa.insert(Meta),
                [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": LIBRARY_ID_KEY, "value": uuid.uuid4().hex},
                ],
            )
            return SCHEMA_VERSION
        found = int(
            conn.execute(sa.select(Meta.value).where(Meta.key == "schema_version")).scalar_one()
        )
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"library schema version {found} is newer than this siglip-search "
                f"({SCHEMA_VERSION}); upgrade it"
            )
        if found < SCHEMA_VERSION and is_read_only(engine):
            raise LibraryReadOnlyError(
                os.path.dirname(database_name(engine)),
                f"schema version {found}, older than {SCHEMA_VERSION}",
                "this siglip-search must upgrade the library once",
            )
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
        if not is_read_only(engine):
            _add_missing_indexes(conn)
        # opening a current library writes nothing (readers stay readers)
        if found < SCHEMA_VERSION:
            conn.execute(
                sa.update(Meta)
                .where(Meta.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )
        return found


def _add_missing_indexes(conn: sa.Connection) -> None:
    """Indexes added after a library was created; a read-only library simply goes without."""
    existing = {index["name"] for index in sa.inspect(conn).get_indexes("images")}
    for index in Base.metadata.tables[Image.__tablename__].indexes:
        if index.name not in existing:
            try:
                with conn.begin_nested():
                    index.create(conn)
            except (sa.exc.OperationalError, LibraryReadOnlyError):
                pass
