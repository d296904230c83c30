"""Deterministic French B2B sample data for the local stack, the same on every machine.

One generator feeds both systems, so a first-day situation is reproducible: clients only in the
CRM (with accents, phones in mixed formats, broken VAT/SIREN and near-duplicates), clients only in
the ERP, and clients present in both with the same VAT but not linked yet; won and open deals with
line items; ERP invoices in every state. Nothing here talks to a system: ``crm_seed`` and
``erp_seed`` write it.

>>> data = build_seed_data(SAMPLE_CATALOGUE, clients=20, today=date(2026, 11, 26))
>>> len(data.clients), data.clients[0].key
(20, 'C00001')
>>> build_seed_data(SAMPLE_CATALOGUE, clients=20, today=date(2026, 11, 26)) == data
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from stdnum import luhn
from stdnum.fr import siren as siren_number
from stdnum.fr import tva

InvoiceState = Literal["draft", "posted", "partially_paid", "paid", "overdue", "cancelled"]
Defect = Literal["bad_vat", "bad_siren", "bad_phone"]


@dataclass(frozen=True)
class SeedProduct:
    """A catalogue entry: the ERP's product code is the key both systems share."""

    code: str
    name: str
    unit_price: Decimal
    currency: str = "EUR"


# Used when no catalogue is read from a live ERP (doctests, unit tests).
SAMPLE_CATALOGUE: tuple[SeedProduct, ...] = (
    SeedProduct("CONS-JOUR", "Journée de conseil", Decimal("950.00")),
    SeedProduct("FORM-01", "Formation inter-entreprises", Decimal("1450.00")),
    SeedProduct("LIC-ANN", "Licence annuelle", Decimal("2400.00")),
)


@dataclass(frozen=True)
class SeedClient:
    """A client company. ``in_crm``/``in_erp`` say where it exists on the first day.

    CRM-side values may carry a defect (a broken VAT, a phone that is not one...): the ERP side
    of a client present in both always holds valid identifiers, as Tryton refuses invalid ones.
    """

    key: str
    name: str
    vat: str | None
    siren: str | None
    street: str
    postal_code: str
    city: str
    country: str
    phone: str
    phone_e164: str
    email: str
    website: str
    in_crm: bool
    in_erp: bool
    advisor: int
    contact_first_name: str
    contact_last_name: str
    defects: tuple[Defect, ...] = ()
    duplicate_of: str | None = None
    erp_name: str | None = None  # how the ERP spells the name, when it differs
    erp_phone: str | None = None  # how the ERP stores the phone, when it differs


@dataclass(frozen=True)
class SeedLine:
    product_code: str
    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal = Decimal(0)


@dataclass(frozen=True)
class SeedDeal:
    """A CRM deal (opportunity) on a CRM client, won or still open."""

    key: str
    client_index: int
    name: str
    won: bool
    lines: tuple[SeedLine, ...]
    close_date: date


@dataclass(frozen=True)
class SeedInvoice:
    """An ERP customer invoice and the state the seed brings it to."""

    key: str  # also the invoice's reference in the ERP, so a second seed finds it
    client_index: int
    lines: tuple[SeedLine, ...]
    invoice_date: date
    due_date: date
    state: InvoiceState


@dataclass(frozen=True)
class SeedData:
    products: tuple[SeedProduct, ...]
    clients: tuple[SeedClient, ...]
    deals: tuple[SeedDeal, ...] = field(default=())
    invoices: tuple[SeedInvoice, ...] = field(default=())

    @property
    def crm_clients(self) -> list[tuple[int, SeedClient]]:
        return [(i, c) for i, c in enumerate(self.clients) if c.in_crm]

    @property
    def erp_clients(self) -> list[tuple[int, SeedClient]]:
        return [(i, c) for i, c in enumerate(self.clients) if c.in_erp]


_TRADES = (
    "Boulangerie",
    "Pâtisserie",
    "Menuiserie",
    "Ébénisterie",
    "Imprimerie",
    "Brasserie",
    "Transports",
    "Fromagerie",
    "Librairie",
    "Quincaillerie",
    "Charcuterie",
    "Cave",
    "Atelier",
    "Société Nouvelle des Établissements",
    "Garage",
    "Pépinières",
    "Hôtel",
    "Laboratoires",
    "Éditions",
    "Chocolaterie",
    "Distillerie",
    "Coopérative",
)
_SURNAMES = (
    "Lefèvre",
    "Durand",
    "Mercier",
    "Gauthier",
    "Rousseau",
    "Bérénger",
    "Fontaine",
    "Chevalier",
    "Lemaître",
    "Dupré",
    "Giraud",
    "Noël",
    "Faure",
    "Hébert",
    "Perrin",
    "Séguin",
    "Boucher",
    "Lacroix",
    "Aubert",
    "Mézière",
    "Caron",
    "Benoît",
    "Réveillère",
    "Marchand",
    "Guérin",
)
_LEGAL_FORMS = ("SARL", "SAS", "SA", "EURL", "SASU", "& Fils", "Frères", "")
_FIRST_NAMES = (
    "Camille",
    "Léa",
    "Chloé",
    "Manon",
    "Élodie",
    "Julien",
    "Théo",
    "Maxime",
    "Hélène",
    "François",
    "Noémie",
    "Jérôme",
    "Agnès",
    "Loïc",
    "Gaëlle",
    "Benoît",
)
_CITIES = (
    ("75011", "Paris"),
    ("69002", "Lyon"),
    ("13001", "Marseille"),
    ("31000", "Toulouse"),
    ("44000", "Nantes"),
    ("33000", "Bordeaux"),
    ("59000", "Lille"),
    ("67000", "Strasbourg"),
    ("35000", "Rennes"),
    ("21000", "Dijon"),
    ("06000", "Nice"),
    ("34000", "Montpellier"),
    ("37000", "Tours"),
    ("87000", "Limoges"),
    ("63000", "Clermont-Ferrand"),
)
_STREETS = (
    "rue de la République",
    "avenue Jean-Jaurès",
    "place du Marché",
    "rue Émile-Zola",
    "boulevard Gambetta",
    "rue des Écoles",
    "chemin des Prés",
    "quai de la Fosse",
    "rue Pasteur",
    "allée des Tilleuls",
    "rue du Faubourg Saint-Honoré",
)


def _siren(rng: random.Random) -> str:
    body = f"{rng.randint(10_000_000, 99_999_999)}"
    number = body + luhn.calc_check_digit(body)
    assert siren_number.is_valid(number)
    return number


def _vat_for(siren: str) -> str:
    vat = str(siren_number.to_tva(siren))
    vat = vat if vat.startswith("FR") else f"FR{vat}"
    assert tva.is_valid(vat)
    return vat


def _phone(rng: random.Random) -> tuple[str, str]:
    """A French phone written as people write it, and the E.164 form Tryton will store."""
    digits = f"{rng.choice('1234569')}{rng.randint(0, 99_999_999):08d}"
    pairs = [digits[1:3], digits[3:5], digits[5:7], digits[7:9]]
    national = f"0{digits[0]}"
    formats = (
        f"{national} {' '.join(pairs)}",
        f"+33 {digits[0]} {' '.join(pairs)}",
        f"{national}{''.join(pairs)}",
        f"+33 (0){digits[0]} {' '.join(pairs)}",
        f"{national}.{'.'.join(pairs)}",
        f"0033 {digits[0]} {' '.join(pairs)}",
    )
    return rng.choice(formats), f"+33{digits}"


def _slug(text: str) -> str:
    table = str.maketrans("àâäéèêëîïôöùûüçÀÂÉÈÊÎÔÛÇ", "aaaeeeeiioouuucAAEEEIOUC")
    return "".join(ch for ch in text.translate(table).lower() if ch.isalnum())


def _client(rng: random.Random, index: int, used_names: set[str]) -> SeedClient:
    while True:
        name = f"{rng.choice(_TRADES)} {rng.choice(_SURNAMES)} {rng.choice(_LEGAL_FORMS)}".strip()
        if name.lower() not in used_names:
            used_names.add(name.lower())
            break
        name = f"{name} {index}"
        if name.lower() not in used_names:
            used_names.add(name.lower())
            break
    siren = _siren(rng)
    postal_code, city = rng.choice(_CITIES)
    phone, phone_e164 = _phone(rng)
    domain = _slug(name.split(" ")[1] if " " in name else name) + f"-{index}.example"
    first = rng.choice(_FIRST_NAMES)
    last = rng.choice(_SURNAMES)
    return SeedClient(
        key=f"C{index + 1:05d}",
        name=name,
        vat=_vat_for(siren),
        siren=siren,
        street=f"{rng.randint(1, 180)} {rng.choice(_STREETS)}",
        postal_code=postal_code,
        city=city,
        country="FR",
        phone=phone,
        phone_e164=phone_e164,
        email=f"{_slug(first)}.{_slug(last)}@{domain}",
        website=f"https://www.{domain}",
        in_crm=True,
        in_erp=False,
        advisor=rng.randrange(3),
        contact_first_name=first,
        contact_last_name=last,
    )


def _with_defect(client: SeedClient, defect: Defect) -> SeedClient:
    if defect == "bad_vat":
        assert client.vat is not None
        key = (int(client.vat[2:4]) + 1) % 97
        return _replace(client, vat=f"FR{key:02d}{client.vat[4:]}", defects=(defect,))
    if defect == "bad_siren":
        assert client.siren is not None
        last = (int(client.siren[-1]) + 1) % 10
        return _replace(client, siren=f"{client.siren[:-1]}{last}", vat=None, defects=(defect,))
    return _replace(client, phone="01 23 45", defects=(defect,))


def _replace(client: SeedClient, **changes: object) -> SeedClient:
    from dataclasses import replace

    return replace(client, **changes)  # type: ignore[arg-type]


def _near_duplicate(
    rng: random.Random, original: SeedClient, index: int, used: set[str]
) -> SeedClient:
    """The same company typed again by another advisor, with another contact person.

    The name differs only by case, accents or legal form (the CRM refuses exact duplicates,
    ignoring case), the postcode is the same: a probable duplicate, never a certain one.
    """
    base = original.name
    for form in _LEGAL_FORMS:
        if form and base.endswith(f" {form}"):
            base = base[: -len(form) - 1]
            break
    variants = [
        base.upper(),
        f"{base} SAS",
        f"{base} S.A.R.L.",
        base.replace("é", "e").replace("É", "E").replace("è", "e"),
        f"{base} (agence)",
        f"{base} (siège)",
    ]
    rng.shuffle(variants)
    variant = next((v for v in variants if v.lower() not in used), f"{base} ({index})")
    used.add(variant.lower())
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_SURNAMES)
    domain = original.email.split("@", 1)[1]
    return _replace(
        original,
        key=f"C{index + 1:05d}",
        name=variant,
        contact_first_name=first,
        contact_last_name=last,
        email=f"{_slug(first)}.{_slug(last)}.{index}@{domain}",
        vat=None,
        siren=None,
        in_erp=False,
        duplicate_of=original.key,
        advisor=(original.advisor + 1) % 3,
    )


def _lines(
    rng: random.Random, catalogue: tuple[SeedProduct, ...], with_discount: bool
) -> tuple[SeedLine, ...]:
    chosen = rng.sample(catalogue, k=min(len(catalogue), rng.randint(1, 3)))
    return tuple(
        SeedLine(
            product_code=p.code,
            quantity=Decimal(rng.choice((1, 1, 2, 3, 5, 10))),
            unit_price=p.unit_price,
            discount_percent=Decimal(rng.choice((0, 0, 5, 10))) if with_discount else Decimal(0),
        )
        for p in chosen
    )


# BottleCRM itself refuses malformed emails and unknown countries, so the defects a CRM can
# really hold are in what it stores as free text: VAT and SIREN (custom fields), phones.
_DEFECTS: tuple[Defect, ...] = ("bad_vat", "bad_siren", "bad_phone")


def _pick_client(
    rng: random.Random, index: int, used: set[str], people: list[SeedClient]
) -> SeedClient:
    """The ``index``-th client: where it lives on the first day follows a 20-client cycle."""
    roll = index % 20
    if roll in {1, 6, 11, 16, 19}:  # 25 %: in both systems, same identifiers
        client = _client(rng, index, used)
        # The ERP stores phones in international form (Tryton rewrites them).
        return _replace(client, in_erp=True, erp_phone=client.phone_e164)
    if roll in {3, 8, 13, 17}:  # 20 %: ERP only
        return _replace(_client(rng, index, used), in_crm=False, in_erp=True)
    if roll in {9, 18}:  # a near-duplicate of an earlier, clean CRM client
        originals = [c for c in people if c.in_crm and c.duplicate_of is None and not c.defects]
        if originals:
            return _near_duplicate(rng, rng.choice(originals), index, used)
    if roll in {4, 14, 15}:  # CRM only, with a defect a clerk must fix
        defect = _DEFECTS[sum(1 for c in people if c.defects) % len(_DEFECTS)]
        return _with_defect(_client(rng, index, used), defect)
    return _client(rng, index, used)


_INVOICE_STATES: tuple[InvoiceState, ...] = (
    "posted",
    "paid",
    "partially_paid",
    "overdue",
    "draft",
    "posted",
    "paid",
    "cancelled",
)


def build_seed_data(
    catalogue: tuple[SeedProduct, ...] | list[SeedProduct],
    *,
    clients: int = 40,
    seed: int = 20261126,
    today: date,
) -> SeedData:
    """The sample data set for ``clients`` companies, the same for the same arguments.

    About 55 % of clients start in the CRM only, 20 % in the ERP only and 25 % in both (same
    VAT, not linked). Among CRM-only clients about one in six carries a defect and one in
    twelve is a near-duplicate of another. Every ERP client gets one or two invoices; the
    states cycle so that each of draft, posted, partially paid, paid, overdue and cancelled
    appears as soon as there are a handful of ERP clients.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    products = tuple(catalogue)
    if not products:
        raise ValueError("the catalogue is empty: the ERP has no salable product with a code")
    rng = random.Random(seed)
    used: set[str] = set()
    people: list[SeedClient] = []
    for index in range(clients):
        people.append(_pick_client(rng, index, used, people))

    deals: list[SeedDeal] = []
    for index, client in enumerate(people):
        if not client.in_crm or client.defects or client.duplicate_of:
            continue
        for n in range(rng.choice((0, 1, 1, 2))):
            won = rng.random() < 0.5
            deals.append(
                SeedDeal(
                    key=f"D{len(deals) + 1:05d}",
                    client_index=index,
                    name=f"Projet {n + 1} – {client.name}",
                    won=won,
                    lines=_lines(rng, products, with_discount=True),
                    close_date=today - timedelta(days=rng.randint(0, 20))
                    if won
                    else today + timedelta(days=rng.randint(10, 60)),
                )
            )

    invoices: list[SeedInvoice] = []
    for index, client in enumerate(people):
        if not client.in_erp:
            continue
        for _ in range(rng.choice((1, 1, 2))):
            state = _INVOICE_STATES[len(invoices) % len(_INVOICE_STATES)]
            if state == "overdue":
                invoice_date = today - timedelta(days=rng.randint(60, 90))
            else:
                invoice_date = today - timedelta(days=rng.randint(0, 20))
            invoices.append(
                SeedInvoice(
                    key=f"SEED-INV-{len(invoices) + 1:05d}",
                    client_index=index,
                    lines=_lines(rng, products, with_discount=False),
                    invoice_date=invoice_date,
                    due_date=invoice_date + timedelta(days=30),
                    state=state,
                )
            )
    return SeedData(
        products=products, clients=tuple(people), deals=tuple(deals), invoices=tuple(invoices)
    )
