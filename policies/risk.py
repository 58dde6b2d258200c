"""Classifying an MCP tool by what it can do: a category, a risk level and a one-line reason.

Pure functions over a tool's name, description and MCP annotations; no I/O, and nothing here is trusted more than
it must be. The rules, in the order they are applied:

1. **Words.** The name is split into words (`PostgreSQL_kill_connection` -> postgre, sql, kill, connection); its
   first known verb counts (in `get_post`, "post" is the object of "get"), and so does every danger word (delete,
   destroy, drop, purge, kill, terminate, revoke, disconnect, clean up, ...). In the description, the first word
   of each clause counts, and danger words count wherever they stand, unless negated ("does not delete"). Each
   verb gives one piece of evidence:

   - read (list, get, search, show, count, convert, ...): it only reads or computes. Risk low.
   - write (create, update, set, add, rename, archive, close an issue, ...): it changes stored data, which can
     be changed back. Risk medium.
   - execute (run, exec, execute, invoke, deploy, send, ...): it sets off an action whose effects are immediate
     and cannot be called back. Risk high.
   - interrupt (kill, terminate, stop, abort, cancel, disconnect, evict; drop and close when their object is
     live): what it interrupts decides:
       - one user's connections or access (`terminate_user_connections`, `suspend_user`, `kick_member`, with
         no process, PID or IP in sight): **write, medium**. The user can reconnect or be let back in, so the
         effect is a change of session state, like signing someone out.
       - an instance, server, VM or cluster with `terminate`: **destructive, critical** (terminating an
         instance deletes it with its disks).
       - anything else, a live process, connection, query or job (`PostgreSQL_kill_connection` "by PID",
         `ip_control_drop_connections` "for specified IPs"): **execute, high**. It acts at once and may abort
         work in flight, but removes nothing stored.
   - destroy (delete, destroy, purge, wipe, erase, truncate, clean up, tear down; drop with a non-live or
     unknown object, as in `drop_table`): it removes data or a resource together with its state, for good.
     **Destructive, critical** (`destroy_connection`, `session_destroy`: "destroy", "clean up").
   - remove (remove, unlink, revoke, discard, uninstall): it takes something away that may not come back.
     Destructive, high.
   - A description that says "cannot be undone" or "irreversible" is destructive, critical.

   The words' verdict is the most severe piece of evidence, so destroy beats the "stops" and "close" beside it.
2. **Annotations** are hints from the server, not facts. They map to a category: `destructiveHint: true` is
   destructive (risk high: the server says it *may* destroy), `readOnlyHint: true` is read, `readOnlyHint: false`
   with `destructiveHint: false` is write. Unset hints claim nothing (the spec's worst-case defaults are applied
   by rule 3 instead).
3. **Combining.** The result is the more severe of the words and the hints: neither can lower what the other
   says. So a tool that claims `readOnlyHint` while its name says destroy stays destructive, and the reason says
   the hint was not trusted; a server's own `destructiveHint` is believed. A tool that the words do not place
   takes its hints; with no hints either (or only `readOnlyHint: false`, which per the spec may be
   destructive), it is **execute, high**: unknown means risky.
4. **Risk adjustments.** A read or write tool that touches credentials, permissions or money (password, secret,
   token, role, permission, payment, ...) is one level riskier. A write tool the server marks both open-world
   and not idempotent (each call reaches outside systems, and a retry repeats it) is high.
"""

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Category", "Classification", "Hints", "Risk", "ToolInfo", "classify"]


class Category(StrEnum):
    """What a tool does to the world, from least to most dangerous."""

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    DESTRUCTIVE = "destructive"


class Risk(StrEnum):
    """How much harm a misused call can do."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


_CATEGORY_RANK = {c: i for i, c in enumerate(Category)}
_RISK_RANK = {r: i for i, r in enumerate(Risk)}
_RISKS = tuple(Risk)


@dataclass(frozen=True, slots=True)
class Hints:
    """A tool's MCP annotations (readOnlyHint, destructiveHint, idempotentHint, openWorldHint); None when unset."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None

    @property
    def given(self) -> bool:
        """Whether any hint is set."""
        return any(h is not None for h in (self.read_only, self.destructive, self.idempotent, self.open_world))


NO_HINTS = Hints()


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool as an upstream lists it: name, description, annotations."""

    name: str
    description: str = ""
    hints: Hints = NO_HINTS


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one tool; `reason` is one line saying why."""

    tool: str
    category: Category
    risk: Risk
    reason: str


# -- the words ----------------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FAMILIES: dict[str, tuple[str, ...]] = {
    "read": _words(
        "list get read search find fetch show describe view lookup count inspect browse retrieve query check "
        "export download preview diff compare validate ping explain summarize calculate compute convert parse "
        "analyze estimate render translate"
    ),
    "write": _words(
        "create add insert update set put patch edit modify change rename move copy save write upload append "
        "upsert assign unassign tag label comment reply post mark pin unpin star archive unarchive restore reopen "
        "merge commit push import sync enable disable lock unlock grant invite register subscribe unsubscribe "
        "schedule configure link attach detach increment decrement toggle submit fork clone replace logout"
    ),
    "execute": _words(
        "run exec execute eval evaluate invoke trigger launch start spawn deploy build compile install call "
        "dispatch apply migrate rollback provision scale send email notify broadcast publish restart reboot"
    ),
    "interrupt": _words("kill terminate stop abort cancel interrupt halt disconnect shutdown evict kick suspend"),
    "destroy": _words("delete destroy purge wipe erase truncate cleanup teardown nuke obliterate shred decommission"),
    "remove": _words("remove rm unlink revoke discard uninstall deprovision"),
}
# drop and close depend on their object: a live one is interrupted; otherwise drop destroys and close writes.
_CONTEXTUAL = {"drop": "destroy", "close": "write"}
# Only in descriptions: these open many descriptions of reading tools, and are rarely a tool name's verb.
_DESCRIPTION_READS = ("return", "give", "provide", "display", "tell")

_VERBS: dict[str, str] = {v: family for family, verbs in _FAMILIES.items() for v in verbs}
_VERBS.update(dict.fromkeys(_CONTEXTUAL, "contextual"))
# Said anywhere in a description, these count even away from the start of a clause.
_DANGER = frozenset(
    [*_FAMILIES["destroy"], *_FAMILIES["remove"], "drop", "kill", "terminate", "disconnect", "evict", "shutdown"]
)
_NEGATIONS = frozenset(_words("not never no without cannot can't don't doesn't won't nor"))
_CLAUSE_LEAD_SKIP = frozenset(_words("it this that tool also then will can may to please just first and or"))

_LIVE = frozenset(
    _words(
        "connection session socket process pid query transaction job task worker container pod thread stream "
        "subscriber backend run workflow pipeline browser tab tunnel"
    )
)
_PROCESS = frozenset(_words("process pid backend query transaction job task worker container pod thread ip"))
_PERSON = frozenset(_words("user member participant player customer guest visitor attendee"))
_INFRA = frozenset(_words("instance vm server cluster machine node environment stack droplet host"))
_SENSITIVE = frozenset(
    _words(
        "secret password passphrase credential token apikey permission role acl privilege billing payment invoice "
        "wallet fund"
    )
)
_IRREVERSIBLE = re.compile(r"\b(?:cannot|can't|can not)\s+be\s+undone\b|\birreversibl[ey]\b|\bno\s+undo\b")

_WHY = {
    "read": "reads only, changes nothing",
    "write": "changes stored data, which can be changed back",
    "close": "closes something that can be reopened",
    "execute": "sets off an action that takes effect at once and cannot be called back",
    "user": "disconnects one user, who can reconnect: a change of session state",
    "infra": "terminating an instance or server deletes it with its disks",
    "interrupt": "interrupts a live process or connection at once (work in flight may be lost); removes nothing",
    "destroy": "removes data or a resource and its state for good",
    "remove": "takes away something (a record, a link, an access) that may not come back",
}


@dataclass(frozen=True, slots=True)
class _Evidence:
    category: Category
    risk: Risk
    reason: str
    from_name: bool
    word: str = ""

    def rank(self) -> tuple[int, int, bool]:
        return _CATEGORY_RANK[self.category], _RISK_RANK[self.risk], self.from_name


_FAMILY_VERDICT = {
    "read": (Category.READ, Risk.LOW),
    "write": (Category.WRITE, Risk.MEDIUM),
    "execute": (Category.EXECUTE, Risk.HIGH),
    "destroy": (Category.DESTRUCTIVE, Risk.CRITICAL),
    "remove": (Category.DESTRUCTIVE, Risk.HIGH),
}

_NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_TEXT_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_CLAUSE_BREAK = re.compile(r"[.;:!?,()\[\]\u2014\u2013]|\s-\s|\b(?:and|then|or)\b")


_JOINED = {("clean", "up"): "cleanup", ("tear", "down"): "teardown", ("shut", "down"): "shutdown"}


def _name_words(name: str) -> list[str]:
    words = [w.lower() for w in _NAME_WORD.findall(name)]
    out: list[str] = []
    for word in words:
        if out and (out[-1], word) in _JOINED:
            out[-1] = _JOINED[(out[-1], word)]
        else:
            out.append(word)
    return out


def _singular(word: str) -> str:
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("ss", "sh", "ch", "x")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")) and len(word) > 2:
        return word[:-1]
    return word


def _verb_of(word: str) -> str | None:
    """The base verb of `word` when it is a known verb in base or third-person form ("deletes" -> "delete")."""
    candidates = [word]
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    for candidate in candidates:
        if candidate in _VERBS:
            return candidate
    return None


def _judge(verb: str, near: frozenset[str], context: frozenset[str], source: str, from_name: bool) -> _Evidence:
    """Evidence from one verb; `near` are the words around it (its object), `context` all the tool's words."""
    says = f'{source} says "{verb}"'
    family = _VERBS[verb]
    if family == "contextual":
        family = "interrupt" if near & _LIVE else _CONTEXTUAL[verb]
        if family == "write":
            return _Evidence(Category.WRITE, Risk.MEDIUM, f"{says}: {_WHY['close']}", from_name, verb)
    if family == "interrupt":
        if context & _PERSON and not context & _PROCESS:
            return _Evidence(Category.WRITE, Risk.MEDIUM, f"{says}: {_WHY['user']}", from_name, verb)
        if verb == "terminate" and context & _INFRA and not context & _LIVE:
            return _Evidence(Category.DESTRUCTIVE, Risk.CRITICAL, f"{says}: {_WHY['infra']}", from_name, verb)
        return _Evidence(Category.EXECUTE, Risk.HIGH, f"{says}: {_WHY['interrupt']}", from_name, verb)
    category, risk = _FAMILY_VERDICT[family]
    return _Evidence(category, risk, f"{says}: {_WHY[family]}", from_name, verb)


def _description_verbs(description: str) -> list[tuple[str, frozenset[str]]]:
    """Verbs that lead a clause, and danger words anywhere, unless negated; each with the words after it."""
    text = description.lower()
    for phrase, word in (("clean up", "cleanup"), ("clean-up", "cleanup"), ("cleans up", "cleanup")):
        text = text.replace(phrase, word)
    for phrase, word in (("tear down", "teardown"), ("tears down", "teardown"), ("shut down", "shutdown")):
        text = text.replace(phrase, word)
    found: list[tuple[str, frozenset[str]]] = []
    for clause in _CLAUSE_BREAK.split(text):
        words = _TEXT_WORD.findall(clause)
        lead = next((i for i, w in enumerate(words) if w not in _CLAUSE_LEAD_SKIP), None)
        for i, word in enumerate(words):
            verb = _verb_of(word)
            if verb is None:
                if i == lead and (word in _DESCRIPTION_READS or word[:-1] in _DESCRIPTION_READS):
                    found.append(("", frozenset()))  # "Returns ...", "Provides ...": a reading tool
                continue
            if i != lead and verb not in _DANGER:
                continue
            if _NEGATIONS.intersection(words[max(i - 2, 0) : i]):
                continue
            found.append((verb, frozenset(_singular(w) for w in words[i + 1 :])))
    return found


def _word_evidence(tool: ToolInfo) -> list[_Evidence]:
    name_words = _name_words(tool.name)
    context = frozenset(_singular(w) for w in [*name_words, *_TEXT_WORD.findall(tool.description.lower())])
    near_name = frozenset(_singular(w) for w in name_words)
    evidence: list[_Evidence] = []
    # A name's verb is its first known verb ("get_post": get, not post); danger words count wherever they are.
    first = True
    for word in name_words:
        if word in _VERBS and (first or word in _DANGER):
            evidence.append(_judge(word, near_name, context, "name", True))
            first = False
    for verb, near in _description_verbs(tool.description):
        if not verb:
            why = f"description says it {_WHY['read']}"
            evidence.append(_Evidence(Category.READ, Risk.LOW, why, False))
        else:
            evidence.append(_judge(verb, near, context, "description", False))
    if _IRREVERSIBLE.search(tool.description.lower()):
        why = "description says the effect cannot be undone"
        evidence.append(_Evidence(Category.DESTRUCTIVE, Risk.CRITICAL, why, False))
    return evidence


def _hint_evidence(hints: Hints) -> _Evidence | None:
    if hints.destructive is True:
        why = "the server marks it destructive (destructiveHint)"
        return _Evidence(Category.DESTRUCTIVE, Risk.HIGH, why, False)
    if hints.read_only is True:
        return _Evidence(Category.READ, Risk.LOW, "annotated read-only (readOnlyHint)", False)
    if hints.read_only is False and hints.destructive is False:
        why = "annotated as a change that destroys nothing (readOnlyHint and destructiveHint false)"
        return _Evidence(Category.WRITE, Risk.MEDIUM, why, False)
    return None


def _bump(risk: Risk) -> Risk:
    return _RISKS[min(_RISK_RANK[risk] + 1, len(_RISKS) - 1)]


def classify(tool: ToolInfo) -> Classification:
    """Classify one tool by its name, description and annotations; see the module docstring for the rules.

    Args:
        tool: The tool as its server lists it.

    Returns:
        Its category, risk and a one-line reason. Never raises.
    """
    evidence = _word_evidence(tool)
    text = max(evidence, key=_Evidence.rank) if evidence else None
    hint = _hint_evidence(tool.hints)
    hints = tool.hints

    if text is None:
        if hint is not None:
            placed = f"{hint.reason}, and nothing in its name or description says otherwise"
            return Classification(tool.name, hint.category, hint.risk, placed)
        if hints.read_only is False:
            why = "annotated as changing state without saying whether it is destructive, and nothing in its name or "
            why += "description says what it does, so it is treated as risky"
        elif hints.given:
            why = "its annotations and its name and description do not say what it does, so it is treated as risky"
        else:
            why = "no annotations, and nothing in its name or description says what it does, so it is treated as risky"
        return Classification(tool.name, Category.EXECUTE, Risk.HIGH, why)

    category, risk, reason = text.category, text.risk, text.reason
    if hint is not None and _CATEGORY_RANK[hint.category] > _CATEGORY_RANK[category]:
        category, risk = hint.category, hint.risk
        said = f'("{text.word}": {text.category})' if text.word else f"({text.category})"
        reason = f"{hint.reason}, more severe than its words suggest {said}"
    elif hint is not None and hint.category is category and _RISK_RANK[hint.risk] > _RISK_RANK[risk]:
        risk = hint.risk
    elif hints.read_only is True and category is not Category.READ:
        reason += "; its readOnlyHint is not trusted"

    if category in (Category.READ, Category.WRITE):
        words_of_tool = _name_words(tool.name) + _TEXT_WORD.findall(tool.description.lower())
        if {_singular(w) for w in words_of_tool} & _SENSITIVE:
            risk = _bump(risk)
            reason += "; it touches credentials, permissions or money"
        elif category is Category.WRITE and hints.open_world is True and hints.idempotent is False:
            risk = Risk.HIGH
            reason += "; it reaches outside systems and a retry repeats it (openWorldHint, not idempotent)"
    return Classification(tool.name, category, risk, reason)
