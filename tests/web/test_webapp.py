"""End to end in a real browser: patches, a reassembled slide, a corrupt file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import CALIBRATED_ENDPOINT, VARIANTS_ENDPOINT, screenshot

pytestmark = pytest.mark.browser

# A dark, purple IDC patch that the tiny mean-colour model calls IDC.
IDC_PATCH = "10253/1/10253_idx5_x651_y701_class1.png"
NO_IDC_PATCH = "10253/0/10253_idx5_x2401_y1251_class0.png"
# A no-IDC patch the tiny model scores about 0.36: its decision follows the threshold.
BORDERLINE_PATCH = "10253/0/10253_idx5_x1051_y1201_class0.png"


def test_start_page_explains_and_shows_notice(page: Any) -> None:
    assert page.get_by_role("heading", name="How to use").is_visible()
    assert "not a diagnostic device" in page.locator(".notice").inner_text()
    assert page.get_by_text("No slide analyses yet").is_visible()
    # Keyboard: the file picker is reachable and labelled.
    assert page.get_by_label("Choose files…").count() == 1
    screenshot(page, "start")


def test_idc_patch_shows_cancer_detected(page: Any, shared_data: Path) -> None:
    files = [IDC_PATCH, NO_IDC_PATCH, BORDERLINE_PATCH]
    page.set_input_files("#file-input", [str(shared_data / name) for name in files])
    rows = page.locator("#patch-rows tr")
    rows.first.wait_for()
    assert rows.count() == 3
    assert "Cancer detected" in rows.nth(0).inner_text()
    assert "Cancer not detected" in rows.nth(1).inner_text()
    borderline = float(rows.nth(2).locator(".bar-label").inner_text())
    assert 0.2 < borderline < 0.5
    assert "Cancer not detected" in rows.nth(2).inner_text()
    assert "1 called IDC" in page.locator("#patch-summary").inner_text()
    screenshot(page, "patches")
    # Lowering the threshold re-decides without a new request.
    page.locator("#threshold").fill("0.2")
    assert "Cancer detected" in rows.nth(2).inner_text()
    assert "2 called IDC" in page.locator("#patch-summary").inner_text()


def test_threshold_follows_the_models_calibration_until_moved(page: Any, shared_data: Path) -> None:
    assert page.locator("#threshold-value").inner_text() == "0.500"
    page.get_by_text("Connection").click()
    page.locator("#endpoint").fill(CALIBRATED_ENDPOINT)
    page.locator("#endpoint").dispatch_event("change")
    page.set_input_files("#file-input", str(shared_data / BORDERLINE_PATCH))
    row = page.locator("#patch-rows tr").first
    row.wait_for()
    # model.json says 0.3, so the borderline patch (about 0.36) is called IDC.
    assert page.locator("#threshold-value").inner_text() == "0.300"
    assert "Cancer detected" in row.inner_text()
    page.locator("#threshold").fill("0.5")
    assert "Cancer not detected" in row.inner_text()
    # Once the user has chosen, new results keep the user's threshold.
    page.set_input_files("#file-input", str(shared_data / BORDERLINE_PATCH))
    page.get_by_text("Analysed 1 of 1 patches.").wait_for()
    assert page.locator("#threshold-value").inner_text() == "0.500"


def test_variant_choice_pins_a_variant_and_its_threshold(page: Any, shared_data: Path) -> None:
    variant = page.locator("#variant")
    # The default endpoint has one variant: shown, nothing else to choose.
    page.wait_for_function("document.getElementById('variant').options[0].value === 'main'")
    assert variant.is_disabled()
    page.get_by_text("Connection").click()
    page.locator("#endpoint").fill(VARIANTS_ENDPOINT)
    page.locator("#endpoint").dispatch_event("change")
    page.wait_for_function("document.getElementById('variant').options.length === 2")
    options = variant.locator("option").all_inner_texts()
    assert options == ["accurate (default) — model tiny-calibrated", "fast — model tiny"]
    # The default variant's calibrated threshold, before any request.
    assert page.locator("#threshold-value").inner_text() == "0.300"
    variant.select_option("fast")
    assert page.locator("#threshold-value").inner_text() == "0.500"
    page.set_input_files("#file-input", str(shared_data / BORDERLINE_PATCH))
    summary = page.locator("#patch-summary")
    page.get_by_text("Analysed 1 of 1 patches.").wait_for()
    assert "by variant fast (model tiny)" in summary.inner_text()
    assert "Cancer not detected" in page.locator("#patch-rows tr").first.inner_text()
    # Picking accurate re-scores the shown patch on it, at its own threshold.
    variant.select_option("accurate")
    page.get_by_text("by variant accurate (model tiny-calibrated)").wait_for()
    assert page.locator("#threshold-value").inner_text() == "0.300"
    assert "Cancer detected" in page.locator("#patch-rows tr").first.inner_text()
    screenshot(page, "variant-accurate")


def test_corrupt_file_shows_clear_error(page: Any, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    page.set_input_files("#file-input", str(corrupt))
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert "corrupt.png" in text
    assert "could not be analysed" in text
    assert "Could not be analysed" in page.locator("#patch-rows").inner_text()
    screenshot(page, "corrupt")


def test_reassembled_slide_heatmap_report_and_truth(
    page: Any, shared_data: Path, tmp_path: Path
) -> None:
    from bcd.slides import reassemble_patient, write_reassembled

    slide = reassemble_patient(shared_data / "8863")
    paths = write_reassembled(slide, tmp_path / "8863")
    renamed = tmp_path / "patient-8863.png"
    renamed.write_bytes(paths["slide.png"].read_bytes())
    # Score every tile alone: the upload says so and the analysis records it.
    page.get_by_label("Slide context: combine each tile with its neighbours").uncheck()
    page.set_input_files("#file-input", [str(renamed), str(paths["truth.npy"])])
    page.get_by_text("Analysis of patient-8863.png complete.").wait_for(timeout=120_000)
    listed = page.evaluate("async () => (await (await fetch('/slides')).json()).slides")
    assert [entry["options"]["context"] for entry in listed] == [False]
    summary = page.locator("#slide-summary").inner_text()
    assert "off: every tile scored alone" in summary
    assert "IDC-positive tissue" in summary
    assert "Per-slide AUC" in summary
    metrics = page.locator("#truth-metrics").inner_text()
    assert "AUC" in metrics
    page.locator("#comparison").wait_for(state="visible")
    assert page.locator("#gallery li").count() == 12
    assert page.evaluate(
        "() => [...document.querySelectorAll('#gallery img')]"
        ".every(i => i.complete && i.naturalWidth === 50)"
    )
    assert page.evaluate("() => document.getElementById('comparison').naturalWidth > 0")
    # The viewer drew the slide: its canvas (deep zoom, or the thumbnail fallback) is not blank.
    page.wait_for_load_state("networkidle")
    drawn = page.evaluate(
        "() => { const c = document.querySelector('#deepzoom:not([hidden]) canvas')"
        " || document.getElementById('viewer');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let coloured = 0; for (let i = 0; i < d.length; i += 4)"
        " if (d[i + 3] > 0 && (d[i] !== 255 || d[i + 1] !== 255 || d[i + 2] !== 255)) coloured++;"
        " return coloured / (d.length / 4); }"
    )
    assert drawn > 0.05
    screenshot(page, "slide-8863")
    page.locator("#gallery button").first.click()
    page.locator("#opacity").fill("0.3")
    screenshot(page, "slide-8863-tile")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Report (PDF)").click()
    pdf = tmp_path / "report.pdf"
    download_info.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    case = page.locator("#case-list li")
    assert case.count() == 1
    assert "patient-8863.png" in case.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    case.get_by_role("button", name="Delete analysis of patient-8863.png").click()
    page.get_by_text("No slide analyses yet").wait_for()


def test_a_zipped_dicom_series_is_analysed_as_one_slide(page: Any, tmp_path: Path) -> None:
    import zipfile

    pytest.importorskip("wsidicom")
    from tests.slides.scanner_files import scanner_levels, write_dicom

    files = write_dicom(tmp_path / "series", scanner_levels())
    archive = tmp_path / "case-dicom.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for index, path in enumerate(files):
            bundle.write(path, f"case-dicom/level-{index}.dcm")
    assert ".zip" in (page.locator("#file-input").get_attribute("accept") or "")
    page.set_input_files("#file-input", str(archive))
    page.get_by_text("Analysis of case-dicom.zip complete.").wait_for(timeout=120_000)
    report = page.evaluate(
        "async () => { const list = (await (await fetch('/slides')).json()).slides;"
        " return (await (await fetch(`/slides/${list[0].id}`)).json()).report; }"
    )
    assert (report["slide"]["format"], report["slide"]["levels"]) == ("dicom", 3)
    assert report["source"]["filename"] == "case-dicom.zip"
    screenshot(page, "slide-dicom-zip")
    case = page.locator("#case-list li")
    page.once("dialog", lambda dialog: dialog.accept())
    case.get_by_role("button", name="Delete analysis of case-dicom.zip").click()
    page.get_by_text("No slide analyses yet").wait_for()
