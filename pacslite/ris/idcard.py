"""The resident ID card number (居民身份证号码, GB 11643): what makes one valid, and what it says.

A number is valid when it has 18 characters (17 digits, then a digit or X), digits 7–14 are a
real birth date, and the last character is the check character of the other 17. The area code
(digits 1–6) is the office that issued the card, which is often younger than its holder and may
be missing from any table, so it never decides validity: an area code the table does not know
is only a note (python-stdnum's ``cn.ric.validate`` refused valid cards whose office was created
after the holder's birth, e.g. 310115 上海浦东 for a birth in 1950).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from stdnum import numdb
from stdnum.cn import ric

from ..core.validation import N_, ValidationError

#: The earliest birth year accepted (the oldest patients; a typo like 1058 is refused).
EARLIEST_YEAR = 1880


@dataclass(frozen=True)
class IdCard:
    number: str
    birth_date: date
    sex: str  # "M" or "F": the 17th digit odd for a man
    area_known: bool  # the area code is in python-stdnum's table (of any year)


def _compact(value: str) -> str:
    return "".join(value.split()).upper()


def read(value: str, today: date | None = None, field: str = "national_id") -> IdCard:
    """The card the number describes; ValidationError naming what is wrong (its shape, its
    birth date, its check character), so the desk knows which part to look at again."""
    number = _compact(value)
    if len(number) != 18 or not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise ValidationError(field, N_("A resident ID card number has 18 characters: 17 digits, then a digit"
                                        " or X."))
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        born = None
    if born is None or born.year < EARLIEST_YEAR or born > (today or date.today()):
        raise ValidationError(field, N_("Characters 7 to 14 of the ID card number are the birth date"
                                        " (YYYYMMDD): %(digits)s is not one."), digits=number[6:14])
    if number[17] != ric.calc_check_digit(number):
        raise ValidationError(field, N_("The last character of the ID card number does not agree with the"
                                        " others: a character was mistyped, or two swapped."))
    return IdCard(number, born, "M" if int(number[16]) % 2 else "F", _area_known(number[:6]))


def _area_known(code: str) -> bool:
    """Whether every part of the area code (province, prefecture, county) is in the table."""
    parts = numdb.get("cn/loc").info(code)
    return bool(parts) and all(props for _, props in parts)
