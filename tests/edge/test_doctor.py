import json
from pathlib import Path

import pytest

from edgesight.cli import main
from edgesight.edge.tools.doctor import coral_devices, cpu_model, raspberry_pi_model, run_checks, video_devices


def fake_pi(root: Path) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    (root / "proc/cpuinfo").write_text("processor\t: 0\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    for dev in ("video0", "video19", "apex_0", "null"):
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev" / dev).write_text("")
    usb = root / "sys/bus/usb/devices"
    for name, (vid, pid) in {"1-1": ("18d1", "9302"), "1-2": ("1a6e", "089a"), "1-3": ("046d", "0825")}.items():
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vid + "\n")
        (usb / name / "idProduct").write_text(pid + "\n")
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("61234\n")
    return root


@pytest.mark.hardware
def test_probes_read_a_raspberry_pi_tree(tmp_path):
    root = fake_pi(tmp_path)
    assert raspberry_pi_model(root) == "Raspberry Pi 5 Model B Rev 1.0"
    assert cpu_model(root) == "Raspberry Pi 5 Model B Rev 1.0"
    assert video_devices(root) == ["/dev/video0", "/dev/video19"]
    tpus = coral_devices(root)
    assert tpus == [
        "Coral USB Accelerator (usb 1-1, 18d1:9302)",
        "Coral USB Accelerator (not yet initialised) (usb 1-2, 1a6e:089a)",
        "Coral PCIe/M.2 Edge TPU (/dev/apex_0)",
    ]
    rep = run_checks(root=root)
    by = {c.name: c for c in rep.checks}
    assert by["temperature"].detail == "61.2 °C" and by["temperature"].ok
    assert "Raspberry Pi 5" in by["platform"].detail
    assert by["picamera2"].ok is False and "python3-picamera2" in by["picamera2"].fix
    assert by["Edge TPU delegate"].ok is False and "libedgetpu1-std" in by["Edge TPU delegate"].fix


def test_doctor_on_this_machine(tmp_path):
    rep = run_checks(root=tmp_path)  # an empty tree: no cameras, no accelerators
    by = {c.name: c for c in rep.checks}
    assert by["backend ai_edge_litert"].ok is True and "(in use)" in by["backend ai_edge_litert"].detail
    assert by["V4L2 cameras"].ok is None and by["Edge TPU devices"].ok is None
    assert by["free disk"].ok is True and rep.can_run is None


@pytest.mark.slow
def test_doctor_bundle_exit_status(color_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--bundle", str(color_bundle), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert e.value.code == 0 and rep["can_run"] is True
    assert any(c["name"] == "bundle loads" and c["ok"] for c in rep["checks"])
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in color_bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.tflite").write_bytes(b"TFL3 not really a model")
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--bundle", str(broken)])
    out = capsys.readouterr().out
    assert e.value.code == 1 and "sha256 does not match" in out and "cannot run the bundle" in out


def test_optional_pieces_say_how_to_add_them():
    from edgesight.edge.tools.doctor import Check, Report

    rep = Report()
    rep.checks = [Check("Edge TPU delegate", None, "not loadable", "sudo apt-get install libedgetpu1-std"),
                  Check("opencv", True, "5.0", "never shown"), Check("camera", False, "none", "plug one in")]
    lines = rep.format().splitlines()
    assert lines[1].strip() == "to add: sudo apt-get install libedgetpu1-std"
    assert lines[4].strip() == "fix: plug one in" and "never shown" not in rep.format()


@pytest.mark.parametrize("info, window", [
    ("  GUI:                           NONE\n", False),  # OpenCV 5 pads the line
    ("  GUI: NONE\n", False),
    ("  GUI:                           GTK3\n", True),
])
def test_doctor_reads_window_support_from_opencv_4_and_5_build_information(tmp_path, monkeypatch, info, window):
    import cv2

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "General configuration for OpenCV\n" + info)
    by = {c.name: c for c in run_checks(root=tmp_path).checks}
    assert by["opencv"].detail.endswith("(with window support)" if window else "(without window support)")
    assert ("display window" in by) is not window
