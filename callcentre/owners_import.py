"""Import the owner directory from a CSV file: all or nothing.

The columns are documented in docs/owners-csv.md. Every row is checked before anything is
written; if any row is bad, :class:`ImportFailed` lists every problem with its line number and
the database is left exactly as it was. Re-importing a file updates what changed and never
duplicates owners, units or phones.
"""

from __future__ import annotations

import asyncio
import csv
import enum
import io
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

import structlog
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.domain.callerid import normalise, safe_display_name
from callcentre.domain.ports import StorageUnavailable
from callcentre.storage.models import Owner, OwnerUnit, Phone, Role, Unit
from callcentre.storage.repo import canonical_label, pin_hasher

log = structlog.get_logger(__name__)

REQUIRED_COLUMNS = ("building", "unit", "owner_name")
OPTIONAL_COLUMNS = ("phones", "fee_balance", "fee_due_date", "vip", "language", "pin", "role", "notes")
LANGUAGES = ("zh", "en")
MAX_LABEL = 32
MAX_NAME = 100
MAX_NOTES = 2000
MAX_PHONES = 10
MAX_FILE_BYTES = 50 * 1024 * 1024
_FEE = re.compile(r"-?\d{1,9}(\.\d{1,2})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PIN = re.compile(r"\d{4,8}")
_TRUE = {"yes", "y", "1", "true", "是"}
_FALSE = {"no", "n", "0", "false", "否"}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # 1-based physical line where the record starts; 0 for the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class ImportFailed(Exception):
    """The file was not imported; ``errors`` holds every problem found, in line order."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = sorted(errors, key=lambda e: e.line)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} problem(s) in the owners file; nothing was imported:\n{lines}")


@dataclass(slots=True)
class ImportReport:
    rows: int = 0
    owners_created: int = 0
    owners_updated: int = 0
    owners_unchanged: int = 0
    units_created: int = 0
    units_updated: int = 0
    units_unchanged: int = 0
    phones_added: int = 0
    phones_removed: int = 0

    @property
    def created(self) -> int:
        return self.owners_created + self.units_created

    @property
    def updated(self) -> int:
        return self.owners_updated + self.units_updated

    def summary(self) -> str:
        return (
            f"{self.rows} rows: owners {self.owners_created} created, {self.owners_updated} updated, "
            f"{self.owners_unchanged} unchanged; units {self.units_created} created, {self.units_updated} updated, "
            f"{self.units_unchanged} unchanged; phones {self.phones_added} added, {self.phones_removed} removed"
        )


class _Missing(enum.Enum):
    """A blank optional cell: "not given", so the stored value is kept."""

    MISSING = "missing"


MISSING = _Missing.MISSING


@dataclass(slots=True)
class _Row:
    line: int
    building: str
    unit: str
    owner_name: str
    phones: dict[str, str]  # normalised -> raw, in file order
    fee_cents: int | _Missing
    fee_due_date: date | None | _Missing
    vip: bool | _Missing
    language: str | _Missing
    pin: str | _Missing
    role: Role
    notes: str | _Missing

    @property
    def unit_key(self) -> tuple[str, str]:
        return (self.building, self.unit)


@dataclass(slots=True)
class _OwnerGroup:
    """One person in the file: rows with the same name that share a phone, or the same unit."""

    name: str
    rows: list[_Row] = field(default_factory=list)

    def numbers(self) -> set[str]:
        return {n for r in self.rows for n in r.phones}

    def units(self) -> set[tuple[str, str]]:
        return {r.unit_key for r in self.rows}


def _cell(raw: dict[str, str], name: str) -> str:
    return unicodedata.normalize("NFKC", raw.get(name, "") or "").strip()


def _parse_row(
    line: int, raw: dict[str, str], country_code: str, trunk_prefix: str, area_code: str | None
) -> tuple[_Row | None, list[str]]:
    """One record to a typed row, or the reasons it is bad (all of them)."""
    problems: list[str] = []

    def label(col: str) -> str:
        value = _cell(raw, col)
        if not value:
            problems.append(f"{col} is empty")
        elif len(value) > MAX_LABEL:
            problems.append(f"{col} is longer than {MAX_LABEL} characters")
        elif any(unicodedata.category(ch)[0] == "C" for ch in value):
            problems.append(f"{col} {value!r} contains control characters")
        return canonical_label(value)

    building = label("building")
    unit = label("unit")

    name_raw = raw.get("owner_name", "") or ""
    name = safe_display_name(unicodedata.normalize("NFKC", name_raw), MAX_NAME + 1)
    if not name:
        problems.append("owner_name is empty")
    elif len(name) > MAX_NAME:
        problems.append(f"owner_name is longer than {MAX_NAME} characters")

    phones: dict[str, str] = {}
    phones_cell = _cell(raw, "phones")
    if phones_cell:
        parts = [p.strip() for p in phones_cell.split(";") if p.strip()]
        if len(parts) > MAX_PHONES:
            problems.append(f"more than {MAX_PHONES} phones")
        for part in parts[:MAX_PHONES]:
            number = normalise(part, country_code=country_code, trunk_prefix=trunk_prefix, area_code=area_code)
            shown = safe_display_name(part, 40)
            if number is None:
                hint = "" if area_code else " (a local number needs its area code)"
                problems.append(f"phone {shown!r} is not a valid phone number{hint}")
            elif number.startswith("ext:"):
                problems.append(f"phone {shown!r} is an internal extension, not an outside number")
            else:
                phones.setdefault(number, part[:64])

    fee: int | _Missing = MISSING
    fee_cell = _cell(raw, "fee_balance")
    if fee_cell:
        if not _FEE.fullmatch(fee_cell):
            problems.append(f"fee_balance {fee_cell[:40]!r} is not an amount in yuan like 1280.50 or -20")
        else:
            try:
                fee = int((Decimal(fee_cell) * 100).to_integral_exact())
            except InvalidOperation:
                problems.append(f"fee_balance {fee_cell[:40]!r} is not an amount in yuan")

    due: date | None | _Missing = MISSING
    due_cell = _cell(raw, "fee_due_date")
    if due_cell:
        try:
            if not _DATE.fullmatch(due_cell):
                raise ValueError
            due = date.fromisoformat(due_cell)
        except ValueError:
            problems.append(f"fee_due_date {due_cell[:40]!r} is not a date YYYY-MM-DD")
        if not fee_cell:
            problems.append("fee_due_date is given without fee_balance")
    elif fee is not MISSING:
        due = None  # a balance without a due date: no due date

    vip: bool | _Missing = MISSING
    vip_cell = _cell(raw, "vip").lower()
    if vip_cell in _TRUE:
        vip = True
    elif vip_cell in _FALSE:
        vip = False
    elif vip_cell:
        problems.append(f"vip {vip_cell[:20]!r} must be yes/no/1/0")

    language: str | _Missing = MISSING
    lang_cell = _cell(raw, "language").lower()
    if lang_cell in LANGUAGES:
        language = lang_cell
    elif lang_cell:
        problems.append(f"language {lang_cell[:20]!r} must be zh or en")

    pin: str | _Missing = MISSING
    pin_cell = _cell(raw, "pin")
    if pin_cell:
        if _PIN.fullmatch(pin_cell):
            pin = pin_cell
        else:
            problems.append("pin must be 4 to 8 digits")  # never echo a PIN

    role = Role.OWNER
    role_cell = _cell(raw, "role").lower()
    if role_cell:
        try:
            role = Role(role_cell)
        except ValueError:
            problems.append(f"role {role_cell[:20]!r} must be owner or tenant")

    notes: str | _Missing = MISSING
    notes_cell = (raw.get("notes", "") or "").strip()
    if notes_cell:
        if len(notes_cell) > MAX_NOTES:
            problems.append(f"notes longer than {MAX_NOTES} characters")
        notes = "".join(ch for ch in notes_cell if ch in "\n\t" or unicodedata.category(ch)[0] != "C")

    if problems:
        return None, problems
    return (
        _Row(line, building, unit, name, phones, fee, due, vip, language, pin, role, notes),
        [],
    )


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImportFailed([RowError(0, f"{path} is larger than {MAX_FILE_BYTES // 1024 // 1024} MB")])
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFailed([RowError(0, f"cannot read {path}: {exc.strerror or exc}")]) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFailed(
            [RowError(line, "not UTF-8 text (save the file as CSV UTF-8; GBK/ANSI is not accepted)")]
        ) from exc


def parse_owners_csv(
    text: str, *, country_code: str, trunk_prefix: str, area_code: str | None = None
) -> list[_Row]:
    """Check the whole file; return its rows or raise ImportFailed with every problem."""
    errors: list[RowError] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    rows: list[_Row] = []
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in record):
                continue
            if header is None:
                header_line = line
                header = [unicodedata.normalize("NFKC", c).strip().lower() for c in record]
                unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                dupes = sorted({c for c in header if header.count(c) > 1})
                if unknown:
                    errors.append(RowError(line, f"unknown column(s): {', '.join(safe_display_name(c) for c in unknown)}"))
                if missing:
                    errors.append(RowError(line, f"missing column(s): {', '.join(missing)}"))
                if dupes:
                    errors.append(RowError(line, f"repeated column(s): {', '.join(dupes)}"))
                if errors:
                    raise ImportFailed(errors)
                continue
            if len(record) != len(header):
                errors.append(RowError(line, f"expected {len(header)} fields, found {len(record)}"))
                continue
            row, problems = _parse_row(line, dict(zip(header, record, strict=True)), country_code, trunk_prefix, area_code)
            errors.extend(RowError(line, p) for p in problems)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        errors.append(RowError(start, f"not valid CSV: {exc}"))
    if header is None and not errors:
        errors.append(RowError(0, "the file is empty (expected a header line: " + ",".join(REQUIRED_COLUMNS) + ",phones,…)"))
    if header is not None and not rows and not errors:
        errors.append(RowError(header_line, "the file has a header but no owners"))
    errors.extend(_cross_check(rows))
    if errors:
        raise ImportFailed(errors)
    return rows


def _cross_check(rows: list[_Row]) -> list[RowError]:
    """Rows that contradict each other: the same unit with two fee balances, a repeated row."""
    errors: list[RowError] = []
    fees: dict[tuple[str, str], _Row] = {}
    for row in rows:
        if row.fee_cents is MISSING:
            continue
        first = fees.setdefault(row.unit_key, row)
        if first is not row and (first.fee_cents, first.fee_due_date) != (row.fee_cents, row.fee_due_date):
            errors.append(
                RowError(row.line, f"unit {row.building}-{row.unit}: fee_balance/fee_due_date differ from line {first.line}")
            )
    for group in _group_owners(rows):
        seen_units: dict[tuple[str, str], int] = {}
        for row in group.rows:
            if row.unit_key in seen_units:
                errors.append(
                    RowError(row.line, f"{row.owner_name} at {row.building}-{row.unit} is already on line {seen_units[row.unit_key]}")
                )
            seen_units.setdefault(row.unit_key, row.line)
        for attr in ("vip", "language", "pin", "notes"):
            given = [(r.line, getattr(r, attr)) for r in group.rows if getattr(r, attr) is not MISSING]
            for line, value in given[1:]:
                if value != given[0][1]:
                    errors.append(RowError(line, f"{attr} for {group.name} differs from line {given[0][0]}"))
    return errors


def _group_owners(rows: list[_Row]) -> list[_OwnerGroup]:
    """Rows with the same owner_name are one person when they share a phone or a unit."""
    groups: list[_OwnerGroup] = []
    for row in rows:
        matching = [
            g
            for g in groups
            if g.name == row.owner_name and (g.numbers() & set(row.phones) or row.unit_key in g.units())
        ]
        if not matching:
            groups.append(_OwnerGroup(row.owner_name, [row]))
            continue
        target = matching[0]
        target.rows.append(row)
        for other in matching[1:]:  # this row links two groups: they are one person
            target.rows.extend(other.rows)
            groups.remove(other)
    return groups


def _merged(group: _OwnerGroup, attr: str) -> object:
    for row in group.rows:
        value = getattr(row, attr)
        if value is not MISSING:
            return value
    return MISSING


async def _find_owner(s: AsyncSession, group: _OwnerGroup, unit_ids: dict[tuple[str, str], int]) -> Owner | None:
    """The stored owner this group is: same name, and linked to one of its units or phones."""
    ids = [unit_ids[k] for k in group.units() if k in unit_ids]
    if ids:
        q = (
            select(Owner)
            .join(OwnerUnit, OwnerUnit.owner_id == Owner.id)
            .where(Owner.name == group.name, OwnerUnit.unit_id.in_(ids))
            .order_by(Owner.id)
            .limit(1)
        )
        found = (await s.execute(q)).scalar_one_or_none()
        if found is not None:
            return found
    numbers = list(group.numbers())
    if numbers:
        q = (
            select(Owner)
            .join(Phone, Phone.owner_id == Owner.id)
            .where(Owner.name == group.name, Phone.number.in_(numbers))
            .order_by(Owner.id)
            .limit(1)
        )
        return (await s.execute(q)).scalar_one_or_none()
    return None


async def _apply(s: AsyncSession, rows: list[_Row], report: ImportReport) -> None:
    now = datetime.now(timezone.utc)
    hasher = pin_hasher()

    # Units first: owners are matched partly by the units they are linked to.
    units: dict[tuple[str, str], Unit] = {}
    unit_fee: dict[tuple[str, str], tuple[int, date | None]] = {}
    for row in rows:
        if row.fee_cents is not MISSING:
            assert not isinstance(row.fee_due_date, _Missing)
            unit_fee.setdefault(row.unit_key, (row.fee_cents, row.fee_due_date))
    for key in dict.fromkeys(r.unit_key for r in rows):
        unit = (await s.execute(select(Unit).where(Unit.building == key[0], Unit.unit == key[1]))).scalar_one_or_none()
        fee = unit_fee.get(key)
        if unit is None:
            unit = Unit(
                building=key[0],
                unit=key[1],
                fee_balance_cents=fee[0] if fee else 0,
                fee_due_date=fee[1] if fee else None,
                created_at=now,
                updated_at=now,
            )
            s.add(unit)
            report.units_created += 1
        elif fee and (unit.fee_balance_cents, unit.fee_due_date) != fee:
            unit.fee_balance_cents, unit.fee_due_date = fee
            unit.updated_at = now
            report.units_updated += 1
        else:
            report.units_unchanged += 1
        units[key] = unit
    await s.flush()
    unit_ids = {k: u.id for k, u in units.items()}

    for group in _group_owners(rows):
        owner = await _find_owner(s, group, unit_ids)
        changed = False
        if owner is None:
            owner = Owner(name=group.name, vip=False, created_at=now, updated_at=now)
            s.add(owner)
            await s.flush()
            report.owners_created += 1
            created = True
        else:
            created = False

        vip, language, notes, pin = (_merged(group, a) for a in ("vip", "language", "notes", "pin"))
        for attr, value in (("vip", vip), ("language", language), ("notes", notes)):
            if value is not MISSING and getattr(owner, attr) != value:
                setattr(owner, attr, value)
                changed = True
        if isinstance(pin, str) and not await _pin_matches(hasher, owner.pin_hash, pin):
            owner.pin_hash = await asyncio.to_thread(hasher.hash, pin)
            changed = True

        for row in group.rows:
            unit = units[row.unit_key]
            link = await s.get(OwnerUnit, (owner.id, unit.id))
            if link is None:
                s.add(OwnerUnit(owner_id=owner.id, unit_id=unit.id, role=row.role.value))
                changed = True
            elif link.role != row.role.value:
                link.role = row.role.value
                changed = True
            changed |= await _sync_phones(s, owner.id, unit.id, row.phones, report)

        if created:
            continue
        if changed:
            owner.updated_at = now
            report.owners_updated += 1
        else:
            report.owners_unchanged += 1
    await s.flush()


async def _pin_matches(hasher, pin_hash: str | None, pin: str) -> bool:  # type: ignore[no-untyped-def]
    if not pin_hash:
        return False

    def _verify() -> bool:
        try:
            return bool(hasher.verify(pin_hash, pin))
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(_verify)


async def _sync_phones(s: AsyncSession, owner_id: int, unit_id: int, wanted: dict[str, str], report: ImportReport) -> bool:
    """Make the owner's phones for this unit exactly the file's; phones without a unit (added by
    an agent) are left alone."""
    existing = (
        (await s.execute(select(Phone).where(Phone.owner_id == owner_id, Phone.unit_id == unit_id))).scalars().all()
    )
    have = {p.number: p for p in existing}
    changed = False
    stale = [p.id for n, p in have.items() if n not in wanted]
    if stale:
        await s.execute(delete(Phone).where(Phone.id.in_(stale)))
        report.phones_removed += len(stale)
        changed = True
    for number, raw in wanted.items():
        phone = have.get(number)
        if phone is None:
            s.add(Phone(number=number, raw=raw, owner_id=owner_id, unit_id=unit_id))
            report.phones_added += 1
            changed = True
        elif phone.raw != raw:
            phone.raw = raw
            changed = True
    return changed


async def import_owners(
    sessions: async_sessionmaker[AsyncSession],
    path: str | Path,
    *,
    country_code: str,
    trunk_prefix: str,
    area_code: str | None = None,
    progress: Callable[[str], object] | None = None,
) -> ImportReport:
    """Check the whole file, then write it in one transaction.

    Raises ImportFailed (every bad row, nothing written) or StorageUnavailable (database
    unusable, nothing written).
    """
    say = progress or (lambda _msg: None)
    path = Path(path)
    text = _read_text(path)
    rows = parse_owners_csv(text, country_code=country_code, trunk_prefix=trunk_prefix, area_code=area_code)
    say(f"{path}: {len(rows)} rows checked, importing")
    report = ImportReport(rows=len(rows))
    try:
        async with sessions() as s, s.begin():
            await _apply(s, rows, report)
    except IntegrityError as exc:
        raise ImportFailed([RowError(0, f"the database refused the import: {getattr(exc, 'orig', exc)}")]) from exc
    except (DBAPIError, PoolTimeout, OSError) as exc:
        raise StorageUnavailable(f"cannot import owners: {getattr(exc, 'orig', None) or exc}") from exc
    say(report.summary())
    log.info("owners imported", file=str(path), **{k: getattr(report, k) for k in report.__slots__})
    return report
