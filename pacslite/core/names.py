"""Patient names: pinyin (with surname readings), DICOM person names, and comparing them.

A Chinese name reaches pacslite typed at the desk (张三) and comes back from modalities in
many forms: ``ZHANG^SAN``, ``Zhang San``, ``ZHANG^SAN=张^三``, or 张三 alone in GB18030. Two
names are the same person's if the ideographs are equal, or if the letters spell one of the
possible readings of the registered ideographs (单 is read shan as a surname, dan elsewhere).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import pydicom.charset
from pypinyin import Style, lazy_pinyin, pinyin

# pydicom believes Python's codec strips and writes the escape sequence of ISO 2022 IR 58 (GB2312
# with code extensions); Python's gb2312 knows no escape sequences, so pydicom would write the
# bytes without ESC $ ) A and read ESC $ ) A back as text. Left to pydicom's own code-extension
# handling, as for the single-byte sets, both directions are right (PS3.5 6.1.2.5.3: designated
# again after each ^ and = of a person name).
pydicom.charset.handled_encodings = tuple(e for e in pydicom.charset.handled_encodings if e != "iso_ir_58")

#: Surnames read differently from the character's everyday reading, and two-character surnames.
SURNAME_READINGS: dict[str, str] = {
    "单": "shan", "曾": "zeng", "解": "xie", "仇": "qiu", "区": "ou", "查": "zha", "朴": "piao",
    "盖": "ge", "乐": "yue", "缪": "miao", "覃": "qin", "翟": "zhai", "召": "shao", "种": "chong",
    "秘": "bi", "重": "chong", "华": "hua", "纪": "ji", "那": "na", "柏": "bai", "曲": "qu",
    "薄": "bo", "朝": "chao", "隗": "wei", "员": "yun", "黑": "he", "冼": "xian", "尉": "wei",
    "欧阳": "ou yang", "司马": "si ma", "诸葛": "zhu ge", "上官": "shang guan", "东方": "dong fang",
    "皇甫": "huang fu", "尉迟": "yu chi", "长孙": "zhang sun", "万俟": "mo qi", "令狐": "ling hu",
    "慕容": "mu rong", "公孙": "gong sun", "夏侯": "xia hou", "澹台": "tan tai", "宇文": "yu wen",
    "司徒": "si tu", "端木": "duan mu", "轩辕": "xuan yuan", "单于": "chan yu", "东郭": "dong guo",
}

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_chinese(name: str) -> bool:
    return bool(_CJK.search(name))


def printable(value: str) -> str:
    """A header value safe to keep and show: control characters become U+FFFD."""
    return _CONTROL.sub("\ufffd", value).strip()


def split_chinese(name: str) -> tuple[str, str]:
    """(surname, given name) of a Chinese name written without a space."""
    name = re.sub(r"\s+", "", name)
    if name[:2] in SURNAME_READINGS:
        return name[:2], name[2:]
    return name[:1], name[1:]


def _syllables(text: str) -> list[str]:
    return [s.strip().lower() for s in lazy_pinyin(text, errors="default") if s.strip()]


def pinyin_parts(name: str) -> tuple[list[str], list[str]]:
    """Pinyin syllables of (surname, given name), the surname read as a surname."""
    surname, given = split_chinese(name)
    family = SURNAME_READINGS.get(surname, "").split() or _syllables(surname)
    return family, _syllables(given)


def pinyin_of(name: str) -> tuple[str, str]:
    """``('zhang san', 'zs')`` for 张三 (``shan …`` for 单…); Latin names pass through lower-cased."""
    if is_chinese(name):
        family, given = pinyin_parts(name)
        syllables = family + given
    else:
        syllables = _syllables(name)
    words = " ".join(" ".join(syllables).split())
    initials = "".join(word[0] for word in words.split() if word[0].isalnum())
    return words, initials


@lru_cache(maxsize=65536)  # a pure function of the name, asked for every answer of a query
def dicom_person_name(name: str, with_ideographs: bool = True) -> str:
    """The DICOM PN of a registered name: ``ZHANG^SAN=张^三`` (pinyin, then ideographs).

    ``with_ideographs=False`` gives the pinyin group alone, for a character set without them.
    A name in Latin letters is sent as typed, in one component.
    """
    if not is_chinese(name):
        return name.strip()
    family, given = pinyin_parts(name)
    alphabetic = f"{''.join(family).upper()}^{''.join(given).upper()}"
    if not with_ideographs:
        return alphabetic
    surname, given_name = split_chinese(name)
    return f"{alphabetic}={surname}^{given_name}"


def readable_person_name(value: str | None) -> str:
    """A DICOM PN as people read it, the reverse of :func:`dicom_person_name`:
    ``WU^MIN=吴^敏`` → ``吴敏 (WU MIN)``, ``WU^MIN`` → ``WU MIN``."""
    if not value:
        return ""
    groups = [" ".join(part for part in group.split("^") if part) for group in value.split("=")]
    letters, ideographs = groups[0], "".join(groups[1].split()) if len(groups) > 1 else ""
    if ideographs and letters:
        return f"{ideographs} ({letters})"
    return ideographs or letters


@lru_cache(maxsize=4096)
def _readings(character: str) -> tuple[str, ...]:
    if not _CJK.match(character):
        return (character.lower(),)
    found = set(pinyin(character, style=Style.NORMAL, heteronym=True, errors="default")[0])
    found |= {SURNAME_READINGS[character]} if character in SURNAME_READINGS else set()
    # ü is written v by pypinyin, u or yu by people and modalities
    found |= {r.replace("v", "u") for r in found} | {r.replace("v", "yu") for r in found}
    return tuple(sorted(found))


@lru_cache(maxsize=4096)
def _letters(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.lower())
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def spells(letters: str, ideographs: str) -> bool:
    """True when ``letters`` (any case, spaces and ^ ignored) is a reading of ``ideographs``."""
    target = _letters(letters)
    chars = [c for c in re.sub(r"\s+", "", ideographs)]
    reachable = {0}
    for char in chars:
        readings = _readings(char) if _CJK.match(char) else (_letters(char),)
        reachable = {pos + len(r) for pos in reachable for r in readings if r and target.startswith(r, pos)}
        if not reachable:
            return False
    return len(target) in reachable


def _words(value: str) -> list[str]:
    return sorted(w for w in re.split(r"[\s^,.\-]+", _letters_keep_space(value)) if w)


def _letters_keep_space(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.lower())
    return "".join(c if (c.isalnum() and not unicodedata.combining(c)) else " " for c in decomposed)


def same_person_name(header_groups: tuple[str, ...], registered: str) -> bool | None:
    """Whether a header name (its component groups) names the registered patient.

    None when the header has no name at all: there is nothing to compare, which is not
    evidence of a wrong patient.
    """
    groups = [g.replace("^", " ").strip() for g in header_groups if g and g.replace("^", "").strip()]
    if not groups:
        return None
    for group in groups:
        if is_chinese(group):
            if is_chinese(registered) and re.sub(r"\s+", "", group) == re.sub(r"\s+", "", registered):
                return True
        elif is_chinese(registered):
            if spells(group, registered):
                return True
        elif _words(group) == _words(registered):
            return True
    return False


def specific_character_set(charset: str) -> str | list[str]:
    """SpecificCharacterSet for a modality's character set: a code-extension set (ISO 2022 …)
    follows the default repertoire as value 1."""
    return ["", charset] if charset.startswith("ISO 2022") else charset


def encodable(charset: str, value: str) -> bool:
    """Whether ``value`` can be written in the DICOM character set (GB2312 lacks rare ideographs)."""
    try:
        value.encode(pydicom.charset.python_encoding[charset])
    except (UnicodeError, LookupError):
        return False
    return True


def for_charset(charset: str, value: str) -> str:
    """Text in a form a DICOM character set can carry: pinyin for ideographs it lacks (Latin-1
    has none)."""
    if is_chinese(value) and (charset == "ISO_IR 100" or not encodable(charset, value)):
        return pinyin_of(value)[0].upper()
    return value


def person_name_for(charset: str, name: str) -> str:
    """The DICOM PN of a registered name in a modality's character set: pinyin alone when the
    set cannot carry its ideographs."""
    return dicom_person_name(name, with_ideographs=charset != "ISO_IR 100" and encodable(charset, name))
