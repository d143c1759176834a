"""Email templates: Jinja2 in a sandbox, rendered with the lead's fields (docs/email-domains.md 3).

A template is written by a company's staff and rendered for every lead of a sequence, so three
things hold: it cannot reach Python's internals (SandboxedEnvironment refuses `__class__` and
the like); the HTML part escapes what the lead wrote (a name of `<script>` arrives as text);
and a variable the lead lacks is an error naming it, before anything is sent, never an empty
string in the lead's inbox (StrictUndefined; a missing or empty field is left out of the
context, so `{{ phone }}` fails for a lead with no phone). A template that means to cope with a
missing field says so: `{{ first_name | default("there") }}` or `{% if phone is defined %}`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, LeadContact, Stage
from shvya.errors import InvalidInput
from shvya.templates.models import Template
from shvya.templates.service import TemplateExists, TemplateStatus, find_template, get_template
from shvya.tenancy.models import Company

# What a template may name at its top level; `custom` holds the lead's attributes.
VARIABLES = frozenset(
    {"name", "first_name", "email", "phone", "stage", "company", "company_name", "custom"}
)
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")


class TemplateSyntaxInvalid(InvalidInput):
    code = "template_syntax_error"


class TemplateUnknownVariable(InvalidInput):
    code = "template_unknown_variable"


class TemplateVariableMissing(InvalidInput):
    code = "template_variable_missing"


class TemplateUnsafe(InvalidInput):
    code = "template_unsafe"


class TemplateNotEmail(InvalidInput):
    code = "template_not_email"


class _Fields(dict[str, Any]):
    """A mapping that knows its own name, so a missing key is reported as `custom.budget`."""

    def __init__(self, path: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.path = path


class _Missing(StrictUndefined):
    """StrictUndefined whose message names the variable by its dotted path."""

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner = self._undefined_obj
        if isinstance(owner, _Fields):
            return f"'{owner.path}.{self._undefined_name}' is undefined"
        return f"'{self._undefined_name}' is undefined"


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=_Missing, autoescape=autoescape, keep_trailing_newline=True
    )


TEXT_ENV = _environment(autoescape=False)
HTML_ENV = _environment(autoescape=True)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def check_template_source(part: str, source: str) -> None:
    """At create time: the template parses, names only variables SHVYA provides, and does not
    reach for what the sandbox refuses. `part` is subject, text or html (named in errors)."""
    env = HTML_ENV if part == "html" else TEXT_ENV
    try:
        parsed = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxInvalid(
            f"{part} line {exc.lineno}: {exc.message}",
            extra={"part": part, "line": exc.lineno},
        ) from None
    unknown = sorted(meta.find_undeclared_variables(parsed) - VARIABLES)
    if unknown:
        raise TemplateUnknownVariable(
            f"{part} uses {', '.join(unknown)}, which SHVYA does not provide: use "
            f"{', '.join(sorted(VARIABLES))} (the lead's own fields are custom.<field>)",
            extra={"part": part, "variables": unknown},
        )
    # A trial render with every field present finds what the sandbox refuses before any lead
    # is written to; other errors of the trial are the sample's, not the template's.
    try:
        env.from_string(source).render(_sample_context())
    except SecurityError as exc:
        raise _unsafe(part, exc) from None
    except Exception:  # noqa: S110 - only the sandbox's refusal matters here
        pass


class _SampleFields(_Fields):
    def __missing__(self, key: str) -> str:
        return "sample"


def _sample_context() -> dict[str, Any]:
    return {
        "name": "Sample Lead",
        "first_name": "Sample",
        "email": "lead@example.com",
        "phone": "+15550100",
        "stage": "New",
        "company": _Fields("company", {"name": "Sample Company"}),
        "company_name": "Sample Company",
        "custom": _SampleFields("custom", {}),
    }


def _unsafe(part: str, exc: SecurityError) -> TemplateUnsafe:
    return TemplateUnsafe(
        f"{part}: {exc}; templates may use the lead's fields and Jinja2's filters, not "
        "Python attributes",
        extra={"part": part},
    )


def lead_context(session: Session, *, lead: Lead) -> dict[str, Any]:
    """The fields a template sees. Empty fields are left out, so using one is an error."""
    company = session.get(Company, lead.company_id)
    stage = session.get(Stage, lead.stage_id)
    contacts = session.scalars(
        select(LeadContact)
        .where(LeadContact.company_id == lead.company_id, LeadContact.lead_id == lead.id)
        .order_by(LeadContact.created_at)
    ).all()
    email = next((c.value for c in contacts if c.channel == Channel.email.value), None)
    phone = next((c.value for c in contacts if c.value.startswith("+")), None)
    name = (lead.name or "").strip()
    company_name = company.name if company is not None else None
    values: dict[str, Any] = {
        "name": name or None,
        "first_name": name.split()[0] if name else None,
        "email": email,
        "phone": phone,
        "stage": stage.name if stage is not None else None,
        "company_name": company_name,
    }
    context = {key: value for key, value in values.items() if value not in (None, "")}
    context["company"] = _Fields("company", {"name": company_name} if company_name else {})
    context["custom"] = _Fields(
        "custom",
        {k: v for k, v in (lead.attributes or {}).items() if v is not None and v != ""},
    )
    return context


def _render(part: str, source: str, context: dict[str, Any], lead_id: uuid.UUID) -> str:
    env = HTML_ENV if part == "html" else TEXT_ENV
    try:
        return env.from_string(source).render(context)
    except SecurityError as exc:
        raise _unsafe(part, exc) from None
    except UndefinedError as exc:
        match = _UNDEFINED_NAME.search(str(exc))
        variable = match.group(1) if match else str(exc)
        raise TemplateVariableMissing(
            f"the {part} uses {{{{ {variable} }}}} but lead {lead_id} has no {variable}: "
            f"fill it in on the lead, or give a fallback "
            f'({{{{ {variable} | default("...") }}}})',
            extra={"part": part, "variable": variable, "lead_id": str(lead_id)},
        ) from None
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxInvalid(
            f"{part} line {exc.lineno}: {exc.message}", extra={"part": part, "line": exc.lineno}
        ) from None


def render_template(
    template: Template, *, context: dict[str, Any], lead_id: uuid.UUID
) -> RenderedEmail:
    if template.channel != Channel.email.value:
        raise TemplateNotEmail(
            f"template {template.id} is a {template.channel} template, not email"
        )
    subject = _render("subject", template.subject or "", context, lead_id)
    return RenderedEmail(
        # A header is one line: whatever newlines the subject rendered to become spaces.
        subject=" ".join(subject.split()),
        text=_render("text", template.body, context, lead_id),
        html=_render("html", template.html, context, lead_id) if template.html else None,
    )


def render_email_template(
    session: Session, *, company_id: uuid.UUID, template_id: uuid.UUID, lead_id: uuid.UUID
) -> RenderedEmail:
    """The company's email template rendered for the company's lead; raises before sending when
    the lead lacks a field the template uses (TemplateVariableMissing, 422)."""
    template = get_template(session, company_id=company_id, template_id=template_id)
    lead = crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    return render_template(template, context=lead_context(session, lead=lead), lead_id=lead.id)


def create_email_template(
    session: Session,
    *,
    company_id: uuid.UUID,
    name: str,
    subject: str,
    text: str,
    html: str | None,
    now: datetime,
) -> Template:
    """An email template, checked (syntax, variables, sandbox) before it is stored. Email needs
    no provider's approval, so it is stored approved: ready for sequences to use."""
    for part, source in (("subject", subject), ("text", text), ("html", html)):
        if source is not None:
            check_template_source(part, source)
    if find_template(
        session, company_id=company_id, channel=Channel.email.value, name=name, language="en"
    ):
        raise TemplateExists(f"an email template named {name!r} already exists")
    template = Template(
        company_id=company_id,
        channel=Channel.email.value,
        name=name,
        language="en",
        category="",
        subject=subject,
        body=text,
        html=html,
        components={},
        status=TemplateStatus.approved.value,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    session.flush()
    return template
