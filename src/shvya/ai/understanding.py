"""What a lead's message means: intent, language, BANT, handoff, opt-out.

With an LLM provider this is a structured output validated against UNDERSTANDING_SCHEMA; the
offline provider answers the same schema by rules (understand_by_rules). Either way, what SHVYA
does next (a stage move, a handoff, a pause, an opt-out) is decided by rules on this object,
never by phrases inside a reply's text.

BANT is kept in `lead.attributes["bant"]`, one entry per field with the message it came from.
A field the lead's latest words leave unknown keeps its earlier value.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError

from shvya.ai.figures import budget_in
from shvya.ai.timeline import fold, resolve_timeline
from shvya.crm.schemas import BANT_FIELDS, Intent

if TYPE_CHECKING:
    from shvya.conversations.models import Message

Language = str  # en, hi, hinglish, es, or another ISO 639-1 code an LLM names


class BudgetOut(BaseModel):
    amount: float | None = None
    currency: str | None = None
    text: str = ""


class AuthorityOut(BaseModel):
    decision_maker: bool
    role: str | None = None
    text: str = ""


class Understanding(BaseModel):
    intent: Intent
    language: Language = "en"
    budget: BudgetOut | None = None
    authority: AuthorityOut | None = None
    need: str | None = Field(default=None, max_length=300)
    timeline: str | None = Field(default=None, max_length=200, description="The lead's words")
    handoff: bool = False
    handoff_reason: Literal["asked_for_person", "angry", "legal_or_complaint"] | None = None
    opt_out: bool = False


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# Written for OpenAI's strict structured outputs (every property required, no extras) and
# Anthropic's tool input alike.
UNDERSTANDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "intent",
        "language",
        "budget",
        "authority",
        "need",
        "timeline",
        "handoff",
        "handoff_reason",
        "opt_out",
    ],
    "properties": {
        "intent": {
            "type": "string",
            "enum": list(Intent.__args__),  # type: ignore[attr-defined]
            "description": "not_interested: the lead clearly declines; opt_out: asks us to "
            "stop messaging them",
        },
        "language": {
            "type": "string",
            "description": "The lead's language: en, es, hi (Devanagari), hinglish (Hindi in "
            "Latin letters), or another ISO 639-1 code",
        },
        "budget": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["amount", "currency", "text"],
                "properties": {
                    "amount": {"type": ["number", "null"]},
                    "currency": {"type": ["string", "null"], "description": "ISO 4217"},
                    "text": {"type": "string", "description": "The lead's words"},
                },
            }
        ),
        "authority": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["decision_maker", "role", "text"],
                "properties": {
                    "decision_maker": {"type": "boolean"},
                    "role": {"type": ["string", "null"]},
                    "text": {"type": "string"},
                },
            }
        ),
        "need": {"type": ["string", "null"], "description": "What the lead wants, briefly"},
        "timeline": {
            "type": ["string", "null"],
            "description": "When they mean to buy, in the lead's own words (e.g. 'next month')",
        },
        "handoff": {"type": "boolean", "description": "A person should take over"},
        "handoff_reason": {
            "type": ["string", "null"],
            "enum": ["asked_for_person", "angry", "legal_or_complaint", None],
        },
        "opt_out": {"type": "boolean", "description": "The lead asks us to stop messaging"},
    },
}


def parse_understanding(data: dict[str, Any] | None) -> Understanding | None:
    if data is None:
        return None
    try:
        understanding = Understanding.model_validate(data)
    except ValidationError:
        return None
    if understanding.handoff and understanding.handoff_reason is None:
        understanding.handoff_reason = "asked_for_person"
    if understanding.opt_out:
        understanding.intent = "opt_out"
    return understanding


# --- understanding by rules (the offline provider) --------------------------------------------

PRICE_WORDS = frozenset(
    """price prices pricing cost costs costing fee fees charge charges rate rates rent
    expensive cheap budget plan plans kitna kitne kitni paisa daam dam quote quotation
    kharcha kharch lagega aayega tuition
    subscription emi precio precios cuesta cuestan costo costos coste tarifa tarifas cuanto
    cuánto vale valor mensualidad cuota""".split()
)
HUMAN_WORDS = re.compile(
    r"\b(human|real person|person|agent|representative|someone|somebody|manager|"
    r"call me|phone call|insaan|kisi se baat|persona|humano|alguien|agente|asesor|"
    r"vendedor|ll[aá]mame|ll[aá]menme|llamada)\b",
    re.IGNORECASE,
)
HUMAN_ASK = re.compile(
    r"talk|speak|call|connect|baat|want|need|hablar|habla|comunicar|contactar|quiero|"
    r"necesito|pasame|p[aá]same|ll[aá]m|karwa|karao|karo",
    re.IGNORECASE,
)
ANGRY_WORDS = re.compile(
    r"\b(angry|furious|terrible|worst|useless|pathetic|scam|fraud|cheated|disgusting|"
    r"ridiculous|unacceptable|horrible|awful|bakwas|bekar|ghatiya|dhokha|"
    r"p[eé]simo|estafa|fraude|verg[uü]enza|harto|harta|enojado|enojada|furioso|furiosa|"
    r"indignante|in[uú]til|timo)\b|बकवास|घटिया|धोखा|बेकार|गुस्सा",
    re.IGNORECASE,
)
# A legal threat hands off whatever the sentence's form ("should I go to consumer court?").
LEGAL_WORDS = re.compile(
    r"\b(lawyer|court|sue|suing|lawsuit|legal (?:action|notice)|consumer forum|"
    r"consumer court|police|chargeback|abogado|demanda(?:r|ré)?|denuncia(?:r|ré)?|profeco|"
    r"vakil|adalat|case (?:karunga|karungi|karenge|kar dunga)|oficina de consumo|"
    r"hoja de reclamaciones|formal complaint|reclamaci[oó]n formal|queja formal)\b|"
    r"वकील|अदालत|कोर्ट|पुलिस|"
    r"उपभोक्ता फोरम",
    re.IGNORECASE,
)
# A complaint needs a grievance: the lead demands their money back, or something of ours is
# broken, late or wrongly charged. "What is your refund policy?" or "¿puedo devolverlo?"
# names a policy and is a question (docs/ai.md 4).
GRIEVANCE = re.compile(
    r"\b(?:(?:want|need|demand|give me|return)\s+(?:my|our)\s+(?:money|payment)(?: back)?|"
    r"(?:i|we)\s+(?:want|need|demand)\s+(?:a|my|our|the|an immediate)\s+refund|refund me|"
    r"money back (?:now|immediately|today)|(?:is|are|was|arrived|came|it's)\s+(?:\w+ )?"
    r"(?:broken|damaged|defective|faulty)|(?:doesn'?t|does not|isn'?t|is not|stopped|not)\s+"
    r"work(?:ing)?|never (?:arrived|came|received|delivered)|charged (?:me )?twice|"
    r"overcharged|charged (?:us|me) (?:twice|double)|"
    r"(?:file|lodge|raise|make|register)\s+(?:a\s+)?(?:formal\s+)?complaint|"
    r"this is a complaint|"
    r"quiero (?:mi dinero|que me devuelvan|un reembolso|el reembolso|la devoluci[oó]n)|"
    r"devu[eé]lvanme|devu[eé]lveme|devolv\w* (?:el|mi|nuestro) dinero|"
    r"cobrad[oa] dos veces|cobr\w+ (?:dos veces|de m[aá]s)|no funciona|"
    r"(?:est[aá]|lleg[oó]|vino)\s+(?:\w+ )?"
    r"(?:rot[oa]|dañad[oa]|defectuos[oa])|nunca lleg[oó]|me cobraron (?:dos veces|de m[aá]s)|"
    r"(?:poner|pongo|pondr[eé]|presentar|presento|hacer|hago) (?:una )?"
    r"(?:queja|reclamaci[oó]n|reclamo)|"
    r"(?:paisa|paise|paison|refund)\s+wap(?:a|i)s\s+(?:karo|kijiye|do|chahiye|chahie|karna)|"
    r"mujhe refund chahiye|refund (?:do|karo|chahiye)|kaam nahi kar (?:raha|rahi|rahe)|"
    r"kharab (?:hai|ho gaya|ho gayi|nikla|nikli)|toot gaya|toot gayi|"
    r"shikayat (?:karni|darj|karunga|karungi))\b|"
    r"पैसे वापस (?:करो|कीजिए|चाहिए|दो)|रिफंड (?:चाहिए|दो|करो)|काम नहीं कर|"
    r"(?:ख़राब|खराब) (?:है|हो गया|हो गई|निकला)|टूट गया|टूट गई|शिकायत (?:दर्ज|करनी|करूँगा|करूंगा)",
    re.IGNORECASE,
)
# A grievance the lead only imagines ("what's your refund policy if it doesn't work for us?",
# "agar kaam nahi kiya to?") is a question about a policy, not a complaint (docs/ai.md 4).
HYPOTHETICAL = re.compile(
    r"\b(?:if|in case|what if|suppose|si|en caso de que|agar|yadi)\b[^.!?\n।]*$|"
    r"(?:अगर|यदि)[^.!?\n।]*$",
    re.IGNORECASE,
)


def has_grievance(text: str) -> bool:
    """A grievance the lead states, not one said after an "if" in the same sentence."""
    return any(
        HYPOTHETICAL.search(text[: match.start()]) is None for match in GRIEVANCE.finditer(text)
    )


OPT_OUT_PHRASES = re.compile(
    r"\b(?:stop|quit) (?:messaging|texting|contacting|sending|writing|calling|spamming)\b|"
    r"\b(?:don'?t|do not|never) (?:message|text|contact|write to|call|bother|whatsapp|"
    r"email|spam) me\b|"
    r"\b(?:remove|take|delete) me (?:off|from)\b|\bunsubscribe me\b|\bno more messages\b|"
    r"\bleave me alone\b|\bi (?:don'?t|do not) want (?:any )?(?:more )?(?:messages|texts)\b|"
    r"\bno me (?:escrib|envi|mand|contact|molest|llam)\w*|"
    r"\b(?:deja|dejen|dejad) de (?:escribir|enviar|mandar|contactar|molestar|llamar)\w*|"
    r"\b(?:dame|darme|denme) de baja\b|\bno quiero (?:recibir )?(?:mas |m[aá]s )?mensajes\b|"
    r"\b(?:b[oó]rr|elimin|sac)a?(?:me|enme) de (?:la|su|tu|vuestra) lista\b|"
    r"\b(?:message|messages|msg|msgs|sms)\s+(?:mat|na|mt)\s+(?:bhej|kar|bhij)\w*|"
    r"\bmat bhej\w*|\b(?:message|msg) band kar\w*|\b(?:contact|call|pareshan) mat kar\w*|"
    r"\bband karo\b.{0,30}\b(?:message|messages|msg|bhejna)\b|"
    r"\b(?:message|messages|msg)\w* bhejna band\b",
    re.IGNORECASE,
)
# "Don't stop sending me updates", "stop mat karna", "no pares": the opposite of an opt-out.
NEGATED_BEFORE = re.compile(r"(?:\bdon'?t|\bdo not|\bnever|\bno|\bnunca)\W+$", re.IGNORECASE)
NEGATED_AFTER = re.compile(r"^\W*(?:mat|na|nahi)\b", re.IGNORECASE)


def asks_to_stop(text: str) -> bool:
    for match in OPT_OUT_PHRASES.finditer(text):
        before, after = text[max(0, match.start() - 12) : match.start()], text[match.end() :]
        if NEGATED_BEFORE.search(before) or NEGATED_AFTER.match(after):
            continue
        return True
    return False


def asks_for_person(text: str) -> bool:
    """A request for a person: the ask and the person within a few words of each other
    ("can I talk to a real person", "kisi insaan se baat karwao"), not any sentence that
    names a manager."""
    for clause in re.split(r"[.!?\n]+", text):
        asks = [(m.start(), m.group(0).lower()) for m in HUMAN_ASK.finditer(clause)]
        for person in HUMAN_WORDS.finditer(clause):
            for at, ask in asks:
                # "talk to a person"; Hindi puts the verb last: "insaan se baat karwao".
                after = at < person.start() or ask.startswith(("baat", "karwa", "karao", "karo"))
                if (
                    after
                    and len(clause[min(at, person.start()) : max(at, person.start())].split()) <= 5
                ):
                    return True
    return False


NOT_INTERESTED = re.compile(
    r"\bnot interested\b|\bno longer interested\b|\bnot for (?:me|us)\b|"
    r"\b(?:went|going) with (?:another|someone else|a competitor)\b|\balready bought\b|"
    r"\bno(?:t)? (?:need|needed) (?:it )?anymore\b|"
    r"\bno (?:me|nos) interesa\b|\bno estoy interesad[oa]\b|\bya no (?:me|nos) interesa\b|"
    r"\binterest(?:ed)? nahi\b|\bnahi chahiye\b|\bzarurat nahi\b|\bzaroorat nahi\b",
    re.IGNORECASE,
)
PURCHASE_WORDS = re.compile(
    r"\b(buy|purchase|order|book|sign up|subscribe|interested|lena hai|chahiye|khareed|"
    r"comprar|contratar|reservar|me interesa|quiero)\b",
    re.IGNORECASE,
)
DEMO_WORDS = re.compile(
    r"\b(demo|trial|test drive|visit|appointment|meeting|prueba|cita|visita|reuni[oó]n|"
    r"stop by|drop by|come by|come over|look around|dekhne aa\w*|milne aa\w*|pasar por)\b",
    re.IGNORECASE,
)
GREETING_ONLY = re.compile(
    r"^\W*(hi+|hello+|hey+|namaste|namaskar|hola|buenas|buenos d[ií]as|buenas tardes|"
    r"buenas noches|good (morning|afternoon|evening)|yo|नमस्ते|नमस्कार)\W*$",
    re.IGNORECASE,
)
# Who decides. A lead who says they decide, or names a role that decides ("I'm the CTO",
# "soy el CEO", "main company ka malik hoon"), is the decision maker; one who names someone
# else who approves is an influencer, even with a senior title ("I'm the CTO but the board
# signs off").
# "finance head", "sales head": a department's head, said the Indian way round.
HEAD_ROLES = r"(?:finance|sales|marketing|operations|purchase|purchasing|it|tech|business) head"
SENIOR_ROLES = (
    r"owner|co-?owner|founder|co-?founder|ceo|cto|cfo|coo|cmo|cio|md|managing director|"
    r"president|director|proprietor|principal|partner|decision[- ]maker|boss|"
    r"head of (?:the )?\w+|vp(?: of \w+)?|vice president(?: of \w+)?|chairman|chairperson|"
    rf"{HEAD_ROLES}"
)
SENIOR_ROLES_ES = (
    r"due[nñ][oa]|director[a]?(?: general)?|gerente(?: general)?|jef[ea]|fundador[a]?|"
    r"cofundador[a]?|propietari[oa]|socio|socia|presidente|presidenta|ceo|cto|cfo|coo|"
    r"responsable de \w+"
)
AUTHORITY_SELF = re.compile(
    r"\b(i decide|i'?ll decide|i will decide|my decision|"
    rf"i am (?:the |an? )?(?:{SENIOR_ROLES})|i'?m (?:the |an? )?(?:{SENIOR_ROLES})|i own|"
    rf"as (?:the )?(?:{SENIOR_ROLES}),? i\b|"
    r"main decide|decision (main|mera|mai)|main hi decide|mera (hi )?decision|"
    r"main (?:hi )?(?:faisla|decide|decision) (?:karunga|karungi|lunga|lungi|loonga|loongi)|"
    r"faisla (?:main|mera)|mera (?:hi )?faisla|"
    r"yo decido|decido yo|"
    rf"soy (?:el |la |un |una )?(?:{SENIOR_ROLES_ES})|la decisi[oó]n es m[ií]a|"
    r"it'?s my call|(?:it'?s |it is )?my call|i sign off|sign off on (?:this|it) myself|"
    r"i'?m paying(?: for it)? myself|i make the (?:call|decision)|i'?m the one who decides|"
    rf"main (?:hi )?(?:\w+ ){{0,5}}(?:owner|malik|maalik|{SENIOR_ROLES}) (?:hoon|hu|hun)|"
    r"yo (?:lo )?pago|lo pago yo)\b|"
    r"मैं ही (?:फ़ैसला|फैसला|निर्णय|डिसाइड) (?:करूँगा|करूंगा|करूँगी|करूंगी|लूँगा|लूंगा|लूँगी|लूंगी)|"
    r"(?:फ़ैसला|फैसला|निर्णय) मैं (?:ही )?(?:करूँगा|करूंगा|करूँगी|करूंगी|लूँगा|लूंगा|लूँगी|लूंगी)|"
    r"(?:फ़ैसला|फैसला|निर्णय) मेरा (?:ही )?है|"
    r"मैं (?:\S+ ){0,5}(?:मालिक|संस्थापक|सीईओ|डायरेक्टर|निदेशक|प्रमुख|(?:\S+ )?हेड) हूँ|"
    r"मैं (?:\S+ ){0,5}(?:मालिक|संस्थापक|सीईओ|डायरेक्टर|निदेशक|प्रमुख|(?:\S+ )?हेड) हूं",
    re.IGNORECASE,
)
AUTHORITY_OTHER = re.compile(
    r"\b(my (boss|manager|partner|wife|husband|team|father|dad|mother|mom|cofounder|"
    r"director)|need to (check|ask|discuss)|have to (check|ask)|ask my|discuss with|"
    r"(mere|meri|mera) (papa|boss|manager|partner|wife|pati|patni|bhai|dad|mummy|father)\b.*"
    r"(decide|decision|puch|poochh)|(papa|boss|manager) (decide|se puch)|"
    r"(mi|mis) (jef[ea]|socio|socia|esposa|esposo|marido|mujer|padre|gerente|director[a]?)|"
    r"tengo que (consultar|preguntar|hablar)|"
    r"\b(?:our|my|the) (?:\w+ ){0,2}(?:manager|boss|director|head|owner|ceo|cfo|partner|wife|"
    r"husband|parents?|board|investors|management|procurement|cofounder|co-founder) "
    r"(?:signs? off|decides|approves|will decide|has to approve|have to approve|"
    r"needs? to approve)|"
    r"tiene que aprobar|tienen que aprobar|lo aprueba|(?:\w+ ){0,2}decide karenge)",
    re.IGNORECASE,
)
ROLE = re.compile(
    r"\b(vp of \w+|vp|coordinator|owner|founder|co-?founder|ceo|cto|cfo|coo|cmo|cio|"
    r"managing director|director[a]?|manager|president|proprietor|"
    r"head of \w+|partner|"
    rf"{HEAD_ROLES}|"
    r"due[nñ][oa]|gerente|jef[ea]|fundador[a]?|propietari[oa]|malik|boss|papa|dad|father|"
    r"wife|husband|esposa|esposo|marido|socio|socia|presidente|presidenta)\b|"
    r"मालिक|संस्थापक|सीईओ|डायरेक्टर|निदेशक|प्रमुख|\S+ हेड",
    re.IGNORECASE,
)
NEED_VERBS = (
    r"need|looking for|want|require|searching for|interested in|chahiye|zarurat|zaroorat|"
    r"necesito|necesitamos|busco|buscamos|quiero|queremos|me interesa|hoping to|"
    r"would like|we'?d like|i'?d like|planning to|plan to|quisiera|quisi[eé]ramos|"
    r"me gustar[ií]a|nos gustar[ií]a"
)
NEED = re.compile(rf"\b({NEED_VERBS})\b[^.?!\n]*", re.IGNORECASE)
NEED_VERB = re.compile(rf"\b(?:{NEED_VERBS}|lo|la|it|this|that)\b", re.IGNORECASE)
# Hindi puts what is wanted before the verb: "ghar khud ke rehne ke liye chahiye".
NEED_BEFORE_VERB = re.compile(
    r"[^.?!\n,]{3,60}?\s+(?:chahiye|chahie|lena hai|karna hai|lagwana hai|banwana hai|"
    r"karwana hai|join karna hai|चाहिए|चाहिये|लेना है|करना है)",
    re.IGNORECASE,
)
QUESTION_START = re.compile(
    r"^\s*[¿]?\s*(what|how|when|where|which|who|why|do|does|is|are|can|could|will|kya|kaise|"
    r"kab|kahan|kitna|kitne|qu[eé]|c[oó]mo|cu[aá]ndo|d[oó]nde|cu[aá]l|cu[aá]nto|cu[aá]nta|"
    r"hay|tienen|tiene|puedo|pueden|se puede)\b",
    re.IGNORECASE,
)
STOPWORDS = frozenset(
    """a an and are as at be but by can could do does for from had has have how i if in is it
    its me my of on or our please so than that the their them then there these they this to
    us was we what when where which who why will with would you your yours hi hello hey tell
    about know want wanted need any some much many ka ki ke hai hain kya ko se me mein
    aap aapka aapki bhi toh el la los las un una unos unas de del y o que en es por para con
    su sus lo al se mi mis tu tus le les me nos como pero mas más muy ya si sí hola
    also just really still get got ok okay thanks thank yes no not im i'm we're
    tienen tiene tengo tenemos pueden puede puedo podemos quiero queremos vivo hay sois
    estan están está esta este esto eso ese ser son soy somos buenos buenas bueno buena dia
    días dias gracias cual cuál cuales donde dónde cuando cuándo algo otro otra mucho
    hoon ho hoga hogi hoti hota tha thi the raha rahi rahe wala wali wale kahan kaha kab
    kaise kyun main mai mera meri mere mujhe humko hum hamara hamari hamare tum tera
    paas pass nahi nahin haan ji bhai yaar na toh ye yeh woh wo karna karo karenge kar
    sakte sakta sakti milta milti milega""".split()
)
ENGLISH = frozenset(
    "the a an is are was were be what how when where which who why do does did you your i we "
    "our my to of for with about and or but can could would will please this that there "
    "have has it its in on at any some".split()
)
HINGLISH = frozenset(
    "hai hain kya kitna kitne kitni aap mujhe mera meri chahiye karna kab kaise nahi haan "
    "bhai ji theek accha acha batao bataiye lena kar karo karna hoga tha thi raha rahe "
    "wala wali mein ko se ka ki ke yeh woh kuch samjhana samjhao samjhaiye batana dijiye "
    "kijiye hindi".split()
)
SPANISH = frozenset(
    "el la los las un una de del y que en es por para con su lo al se mi tu le nos como pero "
    "más mas muy ya sí hola gracias quiero necesito cuánto cuanto cuesta precio tienen tiene "
    "puedo está esta estoy somos tenemos usted ustedes buenas buenos días dias qué cuál dónde "
    "cuándo porque también vale mes año semana próximo proximo presupuesto interesa "
    "interesan quisiera podría gustaría".split()
)


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"[\w₹$€£]+", folded)


def detect_language(text: str, *, default: str = "en") -> str:
    """en, es, hi (Devanagari) or hinglish (Hindi in Latin letters)."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum("\u0900" <= c <= "\u097f" for c in letters) / len(letters) > 0.3:
        return "hi"
    tokens = words(text)
    if not tokens:
        return default
    hinglish = sum(t in HINGLISH for t in tokens) / len(tokens)
    spanish = sum(t in SPANISH for t in tokens) / len(tokens)
    english = sum(t in ENGLISH for t in tokens) / len(tokens)
    if re.search(r"[ñ¿¡áéíóú]", text):
        spanish += 0.2
    # English words in a Hinglish or Spanish message are common ("premium plan ka price"); a
    # message is English when its small words are ("what about the basic plan?").
    if hinglish >= 0.2 and hinglish >= spanish and hinglish > english:
        return "hinglish"
    if spanish >= 0.2 and spanish > english:
        return "es"
    if GREETING_ONLY.match(text) and default != "en":
        return "es" if re.match(r"\W*(hola|buen)", text, re.I) else default
    return "en"


def understand_by_rules(
    text: str,
    *,
    opt_out_keywords: list[str] | None = None,
    default_currency: str = "USD",
    default_language: str = "en",
) -> Understanding:
    from shvya.conversations.service import opt_out_keyword

    stripped = text.strip()
    opted = opt_out_keyword(stripped, company_keywords=opt_out_keywords or []) == "out" or bool(
        asks_to_stop(stripped)
    )
    budget = budget_in(stripped, default_currency=default_currency)
    authority = None
    self_match, other_match = AUTHORITY_SELF.search(stripped), AUTHORITY_OTHER.search(stripped)
    if self_match or other_match:
        # "I'm the CTO, but my board approves": a title is not the decision when the lead
        # names who makes it; "I decide" is.
        decides = self_match is not None and (
            other_match is None or not ROLE.fullmatch(_role_words(self_match.group(0)))
        )
        match = self_match if decides else (other_match or self_match)
        assert match is not None
        role = ROLE.search(match.group(0)) or ROLE.search(stripped)
        authority = AuthorityOut(
            decision_maker=decides,
            role=role.group(0).lower() if role else None,
            text=match.group(0),
        )
    need = next(
        (
            found
            for pattern in (NEED, NEED_BEFORE_VERB)
            for match in pattern.finditer(stripped)
            if (found := _need(match.group(0))) is not None
        ),
        None,
    )
    timeline = resolve_timeline(stripped, base=date(2000, 1, 1))
    handoff_reason: Literal["asked_for_person", "angry", "legal_or_complaint"] | None = None
    if asks_for_person(stripped):
        handoff_reason = "asked_for_person"
    elif LEGAL_WORDS.search(stripped) or has_grievance(stripped):
        handoff_reason = "legal_or_complaint"
    elif ANGRY_WORDS.search(stripped):
        handoff_reason = "angry"
    content = {_stem(w) for w in words(stripped) if w not in STOPWORDS}
    intent: Intent
    if opted:
        intent = "opt_out"
    elif handoff_reason == "asked_for_person":
        intent = "human_request"
    elif handoff_reason is not None:
        intent = "complaint"
    elif NOT_INTERESTED.search(stripped):
        intent = "not_interested"
    elif GREETING_ONLY.match(stripped):
        intent = "greeting"
    elif content & {_stem(w) for w in PRICE_WORDS} and (
        "?" in stripped or QUESTION_START.match(stripped) or budget is None
    ):
        intent = "price_inquiry"
    elif DEMO_WORDS.search(stripped):
        intent = "demo_request"
    elif "?" in stripped or QUESTION_START.match(stripped):
        intent = "question"
    elif PURCHASE_WORDS.search(stripped):
        intent = "purchase_intent"
    else:
        intent = "other"
    return Understanding(
        intent=intent,
        language=detect_language(stripped, default=default_language),
        budget=(
            BudgetOut(amount=float(budget.value), currency=budget.currency, text=budget.text)
            if budget
            else None
        ),
        authority=authority,
        need=need if intent != "not_interested" else None,
        timeline=timeline.text if timeline else None,
        handoff=handoff_reason is not None and not opted,
        handoff_reason=handoff_reason if not opted else None,
        opt_out=opted,
    )


# Words around a "when" that say nothing of what: "humein agle mahine tak chahiye" is a
# timeline, not a need (docs/ai.md 4).
NEED_FILLER = frozenset(
    """tak pehle pahle humein hamein hame hume humko hamko mujhe muje by before until till
    latest antes hasta we us it हमें हमको मुझे तक से पहले चाहिए चाहिये है""".split()
)


def _role_words(text: str) -> str:
    """ "I'm the CTO" -> "CTO": what is left of a self-description once "I am the" goes."""
    return re.sub(
        r"^(?:i'?m|i am|as|soy|main)\s+(?:the |an? |el |la |un |una )?", "", text, flags=re.I
    ).strip()


def _need(text: str) -> str | None:
    cleaned = text.strip(" ,;:")[:300]
    # "I need it next month" / "lo necesito el próximo mes" say when, not what.
    if len(cleaned.split()) < 2 or re.fullmatch(r"\w+\s+(it|this|that|one|lo|eso)\b.*", cleaned):
        return None
    when = resolve_timeline(cleaned, base=date(2000, 1, 1))
    rest = fold(cleaned).replace(fold(when.text), " ") if when is not None else cleaned
    rest = NEED_VERB.sub(" ", rest)
    # Split on spaces, not \w: Devanagari's vowel signs are not word characters.
    tokens = re.findall(r"[^\s,.;:!?\u0964]+", unicodedata.normalize("NFKC", rest).casefold())
    if not [w for w in tokens if w not in STOPWORDS and w not in NEED_FILLER]:
        return None
    return cleaned


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# --- BANT -------------------------------------------------------------------------------------


def merge_bant(
    current: dict[str, Any],
    understood: Understanding,
    *,
    message_id: uuid.UUID,
    received_at: datetime,
    local_date: date,
    default_currency: str,
) -> tuple[dict[str, Any], list[str]]:
    """The lead's BANT after this message, and the fields it changed. Unknown never
    overwrites known; a newer known value does, an older one (imported history read late)
    does not."""
    origin = {"message_id": str(message_id), "at": received_at.isoformat()}
    found: dict[str, dict[str, Any]] = {}
    if understood.budget is not None:
        amount = understood.budget.amount
        if amount is None and understood.budget.text:
            parsed = budget_in(
                f"budget {understood.budget.text}", default_currency=default_currency
            )
            amount = float(parsed.value) if parsed is not None else None
        if amount is not None and amount > 0:
            found["budget"] = {
                "amount": _plain(amount),
                "currency": (understood.budget.currency or default_currency).upper(),
                "text": understood.budget.text,
            }
    if understood.authority is not None:
        found["authority"] = {
            "value": "decision_maker" if understood.authority.decision_maker else "influencer",
            "role": understood.authority.role,
            "text": understood.authority.text,
        }
    if understood.need:
        found["need"] = {"value": understood.need.strip()[:300]}
    if understood.timeline:
        window = resolve_timeline(understood.timeline, base=local_date)
        entry: dict[str, Any] = {"text": understood.timeline.strip()[:200]}
        if window is not None:
            entry.update({"from": window.start.isoformat(), "to": window.end.isoformat()})
        found["timeline"] = entry
    merged = dict(current)
    changed: list[str] = []
    for field in BANT_FIELDS:
        new = found.get(field)
        if new is None:
            continue
        old = current.get(field)
        if isinstance(old, dict) and {k: old.get(k) for k in new} == new:
            continue
        if isinstance(old, dict) and _said_after(old, received_at):
            continue
        merged[field] = {**new, **origin}
        changed.append(field)
    return merged, changed


def _said_after(entry: dict[str, Any], moment: datetime) -> bool:
    try:
        said = datetime.fromisoformat(str(entry.get("at")))
    except ValueError:
        return False
    if said.tzinfo is None or moment.tzinfo is None:
        return said.replace(tzinfo=None) > moment.replace(tzinfo=None)
    return said > moment


def _plain(amount: float) -> int | float:
    value = Decimal(str(amount))
    return int(value) if value == value.to_integral() else float(value)


def bant_known(bant: dict[str, Any], field: str) -> bool:
    return isinstance(bant.get(field), dict)


# --- messages no understanding has read -------------------------------------------------------

UNREAD_SCAN = 500  # how far back a run looks for lead messages nobody understood


@dataclass(frozen=True)
class Read:
    """One lead message understood by the rules after the fact, with its own time."""

    message_id: uuid.UUID
    received_at: datetime  # aware
    understood: Understanding


def read_unread(
    messages: list[Message],
    *,
    skip: set[uuid.UUID],
    default_currency: str,
    default_language: str,
) -> list[Read]:
    """The rules' reading of the lead's messages that no understanding has read yet (imported
    history, messages that came while the AI was paused or switched off), oldest first. A
    message an understanding read carries meta["understood"]; `skip` holds the ones the
    caller understands itself. Writes nothing (docs/ai.md 4)."""
    read: list[Read] = []
    for message in messages:
        if (
            message.direction != "in"
            or message.id in skip
            or message.meta.get("understood")
            or message.meta.get("opt_keyword")
            or not message.text.strip()
        ):
            continue
        at = message.received_at or message.created_at
        read.append(
            Read(
                message_id=message.id,
                received_at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
                understood=understand_by_rules(
                    message.text,
                    default_currency=default_currency,
                    default_language=default_language,
                ),
            )
        )
    return read


def merge_read(
    bant: dict[str, Any], read: list[Read], *, timezone: str, default_currency: str
) -> tuple[dict[str, Any], list[str]]:
    """BANT with what `read` says merged in, message by message, and the fields it changed."""
    changed: list[str] = []
    for item in read:
        bant, fields = merge_bant(
            bant,
            item.understood,
            message_id=item.message_id,
            received_at=item.received_at,
            local_date=item.received_at.astimezone(ZoneInfo(timezone)).date(),
            default_currency=default_currency,
        )
        changed += [f for f in fields if f not in changed]
    return bant, changed
