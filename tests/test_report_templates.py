"""Report templates (报告模板, issue 32), the domain: three levels, the tree a radiologist sees for
an exam, search by name or pinyin initials, the procedure's normal template, choice slots that
refuse a signature until chosen, and export/import all or none with formulas neutralised."""
from __future__ import annotations

import json

import pytest

from pacslite.core import audit
from pacslite.core.validation import Conflict, FormErrors, ValidationError
from pacslite.ris import report_templates as templates
from pacslite.ris import procedures, reports
from pacslite.web import csvout
from tests.conftest import make_user

ADMIN, DR_WANG, DR_LI = audit.Actor("admin1"), audit.Actor("dr_wang"), audit.Actor("dr_li")


@pytest.fixture
def people(conn):
    make_user(conn, "admin1", "admin")
    make_user(conn, "dr_wang", "radiologist")
    make_user(conn, "dr_li", "radiologist")


def add(conn, app, actor, **fields) -> int:
    data = {"level": "department", "modality": "CT", "body_part": "", "folder": "", "name": "x",
            "findings": "f", "impression": "i", **fields}
    return templates.save(conn, actor, app.config, data)


def test_slots_are_found_and_stop_a_signature_until_chosen() -> None:
    assert templates.slots("{左/右}肺上叶见结节，{未见/可见}异常") == [(0, 5, ["左", "右"]), (12, 19, ["未见", "可见"])]
    assert templates.slots("{单独一个} {a/} {/b} 无括号/斜线") == []
    assert templates.first_slot("第一行\n右肺{未见/可见}异常") == (2, "右肺{未见/可见}异常")
    with pytest.raises(FormErrors) as refused:
        reports.signing({"level": "final", "result_class": "normal", "findings": "{左/右}肺清晰。",
                         "impression": "未见异常。"})
    assert list(refused.value.problems) == ["findings"] and "line 1" not in refused.value.problems["findings"][0]
    assert refused.value.problems["findings"][1] == {"line": 1, "text": "{左/右}肺清晰。"}
    assert reports.signing({"level": "final", "result_class": "normal", "findings": "左肺清晰。",
                            "impression": "未见异常。"}).level == "final"


def test_the_tree_shows_the_department_the_sections_and_only_ones_own(app, conn, people) -> None:
    add(conn, app, ADMIN, name="胸部CT平扫正常", body_part="CHEST", folder="胸部")
    add(conn, app, ADMIN, name="头颅CT正常", body_part="HEAD", folder="头颅")
    add(conn, app, ADMIN, name="任何部位", modality="")
    add(conn, app, ADMIN, level="section", section="胸组", name="肺结节随访", body_part="CHEST", folder="肺")
    add(conn, app, DR_WANG, level="personal", name="我的肺炎", body_part="CHEST")
    add(conn, app, DR_LI, level="personal", name="李的肺炎", body_part="CHEST")
    add(conn, app, ADMIN, name="MR only", modality="MR")
    seen = templates.visible(conn, "dr_wang", modality="CT", body_part="chest")
    assert [row["name"] for row in seen] == ["我的肺炎", "肺结节随访", "任何部位", "胸部CT平扫正常"]
    tree = templates.tree(seen)
    assert [level for level, _ in tree] == ["personal", "section", "department"]
    assert [folder for folder, _ in tree[2][1]] == ["", "胸部"]
    # by name or by pinyin initials
    assert [row["name"] for row in templates.search(seen, "xbc")] == ["胸部CT平扫正常"]
    assert [row["name"] for row in templates.search(seen, "肺")] == ["我的肺炎", "肺结节随访"]
    # another radiologist's own is neither seen nor inserted
    li = conn.execute("SELECT id FROM report_templates WHERE owner = 'dr_li'").fetchone()[0]
    with pytest.raises(templates.NotFound):
        templates.for_use(conn, "dr_wang", li)


def test_who_keeps_which_template(app, conn, people) -> None:
    with pytest.raises(Conflict):  # a radiologist does not keep the department's
        add(conn, app, DR_WANG, name="科室的")
    mine = add(conn, app, DR_WANG, level="personal", name="我的")
    with pytest.raises(Conflict):  # nor another's own
        templates.save(conn, DR_LI, app.config, {"level": "personal", "name": "我的", "findings": "改"}, mine)
    with pytest.raises(Conflict):
        templates.remove(conn, DR_LI, mine)
    with pytest.raises(ValidationError) as clash:
        add(conn, app, DR_WANG, level="personal", name="我的")
    assert clash.value.field == "name"
    with pytest.raises(ValidationError) as empty:
        add(conn, app, ADMIN, name="空", findings="", impression="")
    assert empty.value.field == "findings"
    templates.remove(conn, DR_WANG, mine)
    assert conn.execute("SELECT COUNT(*) FROM report_templates").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action IN ('template.add', 'template.remove')"
                        ).fetchone()[0] == 2


def test_the_procedures_normal_template_the_radiologists_own_first(app, conn, people) -> None:
    procedures.add_procedure(conn, ADMIN, app.config, {"code": "CT-CHEST", "modality": "CT", "name_zh": "胸部CT平扫"})
    exam = {"procedure_code": "CT-CHEST"}
    assert templates.normal_for(conn, "dr_wang", exam) is None
    add(conn, app, ADMIN, name="科室正常", procedure_code="CT-CHEST")
    assert templates.normal_for(conn, "dr_wang", exam)["name"] == "科室正常"
    add(conn, app, DR_WANG, level="personal", name="我的正常", procedure_code="CT-CHEST")
    assert templates.normal_for(conn, "dr_wang", exam)["name"] == "我的正常"
    assert templates.normal_for(conn, "dr_li", exam)["name"] == "科室正常"
    with pytest.raises(ValidationError) as unknown:
        add(conn, app, ADMIN, name="无此检查", procedure_code="NOPE")
    assert unknown.value.field == "procedure_code"
    assert templates.inserted("已写的", "模板", replace=False) == "已写的\n模板"
    assert templates.inserted("已写的", "模板", replace=True) == "模板"


def test_export_and_import_all_or_none_with_formulas_neutralised(app, conn, people) -> None:
    add(conn, app, ADMIN, name="胸部正常", findings="=HYPERLINK(\"http://x\")", impression="未见异常。")
    add(conn, app, ADMIN, level="section", section="胸组", name="结节", findings="{左/右}肺结节", impression="随访")
    add(conn, app, DR_WANG, level="personal", name="我的", findings="私", impression="私")
    exported = json.loads(templates.export_json(conn))["templates"]
    assert [row["name"] for row in exported] == ["胸部正常", "结节"]  # nobody's own
    rows = [[csvout.neutralise(cell) for cell in row] for row in templates.export_csv_rows(conn)]
    assert rows[1][templates.FIELDS.index("findings")] == "'=HYPERLINK(\"http://x\")"
    import csv
    import io
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    parsed = templates.parse(out.getvalue().encode(), "templates.csv")
    assert parsed[0]["findings"] == "=HYPERLINK(\"http://x\")"  # the apostrophe taken off again
    # into another department: one bad row and nothing is imported
    conn.execute("DELETE FROM report_templates WHERE level <> 'personal'")
    conn.commit()
    bad = parsed + [{**parsed[0], "name": "坏的", "modality": "XX"}]
    with pytest.raises(ValidationError) as refused:
        templates.import_rows(conn, ADMIN, app.config, bad)
    assert "Row 4" in str(refused.value)
    assert conn.execute("SELECT COUNT(*) FROM report_templates WHERE level <> 'personal'").fetchone()[0] == 0
    with pytest.raises(Conflict):
        templates.import_rows(conn, DR_WANG, app.config, parsed)
    assert templates.import_rows(conn, ADMIN, app.config, parsed) == {"added": 2, "replaced": 0}
    assert templates.import_rows(conn, ADMIN, app.config, parsed) == {"added": 0, "replaced": 2}
    with pytest.raises(ValidationError):
        templates.parse(b'{"no": 1}', "x.json")
    with pytest.raises(ValidationError):
        templates.parse(b"\xff\xfe", "x.csv")


def test_an_import_over_its_size_is_refused_before_it_is_read(app, client_as) -> None:
    import io
    from tests.conftest import csrf_token
    app.config["TEMPLATE_IMPORT_MAX_BYTES"] = 1000
    admin = client_as("admin")
    big = admin.post("/admin/templates/import", data={"csrf_token": csrf_token(admin, "/admin/templates"),
                                                      "file": (io.BytesIO(b"level,name\n" + b"x" * 200_000), "t.csv")},
                     content_type="multipart/form-data")
    assert big.status_code == 413


def test_a_refused_import_says_which_row_and_why_in_the_users_language(app, client_as) -> None:
    import io
    from tests.conftest import csrf_token
    admin = client_as("admin")
    rows = "level,section,name,findings\ndepartment,,胸部正常,未见异常。\nsection,,结节,肺结节\n"
    headers = {"Accept-Language": "zh-CN,zh;q=0.9"}
    answer = admin.post("/admin/templates/import", headers=headers, follow_redirects=True,
                        data={"csrf_token": csrf_token(admin, "/admin/templates"),
                              "file": (io.BytesIO(rows.encode()), "t.csv")}, content_type="multipart/form-data")
    page = answer.get_data(as_text=True)
    assert "第 3 行，section：专业组模板须填写所属专业组" in page, page  # the row's problem in Chinese too
    assert "names its section" not in page
