"""ProstateKD: 3D Slicer module that segments the prostate on T2 MRI with knowledge-distilled students.

Thin by design: the Widget wires the GUI (Resources/UI/ProstateKD.ui) to
:class:`ProstateKDLib.slicer_logic.ProstateKDLogic`; everything else lives in
the pure-Python ``ProstateKDLib`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ProstateKDLib.errors import CancelledError, DeviceError, InputError, ProstateKDError
from ProstateKDLib.slicer_dependencies import NEVER_INSTALL, module_requirements, requirement_satisfied
from ProstateKDLib.slicer_logic import ProstateKDLogic, ProstateKDParameters, segment_terminology
PAPER = ('Ben Loussaief et al. (2023), "Knowledge Distillation for Adaptive MRI Prostate Segmentation '
         'Based on Limit-Trained Multi-Teacher Models"')


def _model_licences() -> str:
    """One HTML line per model bundle found: name, version and licence."""
    try:
        from ProstateKDLib.bundle import find_bundles

        bundles, _ = find_bundles()
    except Exception as error:  # the help text must never break module loading
        return f"<li>models could not be listed: {error}</li>"
    return "".join(f"<li>{b.meta.name} {b.meta.version}: licence {b.meta.license}</li>" for b in bundles)


class ProstateKD(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ProstateKD"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["ProstateKD contributors"]
        self.parent.helpText = (
            "Segments the prostate gland on an axial T2-weighted MRI volume with a small student network "
            "trained by knowledge distillation from several teachers. Choose the input volume and a model, "
            "click Apply: a 'Prostate' segment (SNOMED CT 41216001) is created in a few seconds on a CPU. "
            "Correct it with 'Edit in Segment Editor', then 'Save as training case' writes the image and the "
            "corrected mask into a multi-site data set for retraining.<br>Models and their licences:<ul>"
            f"{_model_licences()}</ul>Please cite {PAPER}."
        )
        self.parent.acknowledgementText = (
            "Built on 3D Slicer, ONNX Runtime, SimpleITK, PyTorch and MONAI (training). The method follows "
            + PAPER + "."
        )


class ProstateKDWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: input, model, device, Apply/Cancel, Edit, Save as training case.

    Segmentations run in one warm background worker (model loaded once, see
    :meth:`ProstateKDLib.slicer_logic.ProstateKDLogic.worker`): the first Apply pays its
    start-up, later ones only the work. Cancel kills it at once (a fresh one starts);
    it ends with the module (cleanup) and with Slicer.
    """

    POLL_MS = 50

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: ProstateKDLogic | None = None
        self.parameters: ProstateKDParameters | None = None
        self.bundles: list = []
        self.job = None
        # What the running job was started for (bound at Apply, never re-read from the panel).
        self.jobVolume = None
        self.jobOutput = None
        self.dependenciesReady = False
        self.deviceUsable = True
        self._updating = False
        self.applyStarted = 0.0
        #: seconds from each Apply click to its segment in the scene (first: worker start-up included)
        self.applySeconds: list = []

    # ------------------------------------------------------------- set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ProstateKD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ProstateKDLogic(slicer.mrmlScene)
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self.onPoll)
        self.ui.progressBar.hide()
        self.populateModels()
        self.populateDevices()

        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParametersFromGUI)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParametersFromGUI)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.updateParametersFromGUI)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateParametersFromGUI)
        self.ui.largestComponentCheckBox.connect("toggled(bool)", self.updateParametersFromGUI)
        self.ui.datasetFolderPathLineEdit.connect("currentPathChanged(QString)", self.updateParametersFromGUI)
        self.ui.siteLineEdit.connect("textChanged(QString)", self.updateParametersFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.saveCaseButton.connect("clicked(bool)", self.onSaveCase)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameters()

    def cleanup(self) -> None:
        """Module closed or reloaded, or Slicer quitting: stop the job and end the warm worker."""
        self.stopJob()
        if self.logic is not None:
            self.logic.close()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameters()

    def onSceneStartClose(self, caller, event) -> None:
        self.stopJob()
        self.setParameters(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameters()

    # ----------------------------------------------------------- parameters
    def initializeParameters(self) -> None:
        from ProstateKDLib.bundle import DEFAULT_MODEL

        parameters = self.logic.parameters()
        if parameters.input_volume is None:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            parameters.input_volume = next((v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")), None)
        if not parameters.model and self.bundles:
            names = [b.meta.name for b in self.bundles]
            parameters.model = DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]
        self.setParameters(parameters)

    def setParameters(self, parameters: ProstateKDParameters | None) -> None:
        if self.parameters is not None:
            self.removeObserver(self.parameters.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameters)
        self.parameters = parameters
        if parameters is not None:
            self.addObserver(parameters.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameters)
        self.updateGUIFromParameters()

    def updateGUIFromParameters(self, caller=None, event=None) -> None:
        p = self.parameters
        if p is None or self._updating:
            return
        self._updating = True
        try:
            self.ui.inputVolumeSelector.setCurrentNode(p.input_volume)
            self.ui.outputSegmentationSelector.setCurrentNode(p.output_segmentation)
            self._selectData(self.ui.modelComboBox, p.model, f"{p.model} (not found)")
            self._selectData(self.ui.deviceComboBox, p.device, f"{p.device} (not available here)")
            self.ui.largestComponentCheckBox.checked = p.largest_component
            if self.ui.datasetFolderPathLineEdit.currentPath != p.dataset_folder:
                self.ui.datasetFolderPathLineEdit.currentPath = p.dataset_folder
            if self.ui.siteLineEdit.text != p.site:
                self.ui.siteLineEdit.text = p.site
        finally:
            self._updating = False
        self.updateModelInfo()
        self.updateDeviceInfo()
        self.updateButtons()

    def updateParametersFromGUI(self, *args) -> None:
        p = self.parameters
        if p is None or self._updating:
            return
        self._updating = True
        try:
            p.input_volume = self.ui.inputVolumeSelector.currentNode()
            p.output_segmentation = self.ui.outputSegmentationSelector.currentNode()
            p.model = self.ui.modelComboBox.currentData or ""
            p.device = self.ui.deviceComboBox.currentData or "auto"
            p.largest_component = self.ui.largestComponentCheckBox.checked
            p.dataset_folder = self.ui.datasetFolderPathLineEdit.currentPath
            p.site = self.ui.siteLineEdit.text.strip()
        finally:
            self._updating = False
        self.updateModelInfo()
        self.updateDeviceInfo()
        self.updateButtons()

    @staticmethod
    def _selectData(combo, value: str, missingText: str) -> None:
        index = combo.findData(value)
        if index < 0 and value:
            combo.addItem(missingText, value)
            index = combo.findData(value)
        combo.setCurrentIndex(max(index, 0))

    # ------------------------------------------------------- models, devices
    def populateModels(self) -> None:
        from ProstateKDLib.bundle import find_bundles

        self.bundles, self.bundleProblems = find_bundles()
        self.ui.modelComboBox.clear()
        for bundle in self.bundles:
            self.ui.modelComboBox.addItem(f"{bundle.meta.name} {bundle.meta.version}", bundle.meta.name)

    def selectedBundle(self):
        name = self.parameters.model if self.parameters else ""
        return next((b for b in self.bundles if b.meta.name == name), None)

    def updateModelInfo(self) -> None:
        bundle = self.selectedBundle()
        problems = "".join(f"<br><span style='color:#b00'>Invalid bundle: {p}</span>" for p in self.bundleProblems)
        if bundle is None:
            name = self.parameters.model if self.parameters else ""
            text = f"Model '{name}' is not installed here." if name else "No model found."
        else:
            meta, provenance = bundle.meta, bundle.meta.provenance
            dice = provenance.get("validation_dice")
            text = (f"{meta.description}<br><b>Size:</b> {bundle.size_bytes() / 1e6:.1f} MB &nbsp; "
                    f"<b>Licence:</b> {meta.license}<br><b>Trained on:</b> {provenance.get('training_data', '?')}"
                    + (f" (validation Dice {dice:.3f})" if isinstance(dice, (int, float)) else ""))
        self.ui.modelInfoLabel.text = text + problems
        self.ui.modelComboBox.toolTip = text

    def populateDevices(self) -> None:
        """auto and CPU always; CUDA when onnxruntime has its CUDA provider; MPS when torch has it."""
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)  # refilling must not reset the chosen device to "auto"
        try:
            self._addDevices(combo)
        finally:
            combo.blockSignals(wasBlocked)
        if self.parameters is not None:
            self._selectData(combo, self.parameters.device, f"{self.parameters.device} (not available here)")

    @staticmethod
    def _addDevices(combo) -> None:
        """onnxruntime runs the models (CPU, or CUDA with onnxruntime-gpu); PyTorch only names GPUs and MPS."""
        combo.clear()
        combo.addItem("auto (GPU if available, else CPU)", "auto")
        combo.addItem("CPU", "cpu")
        try:
            cuda = False
            if importlib.util.find_spec("onnxruntime") is not None:
                import onnxruntime

                from ProstateKDLib.onnx_backend import CUDA_PROVIDER

                cuda = CUDA_PROVIDER in onnxruntime.get_available_providers()
            if importlib.util.find_spec("torch") is None:
                if cuda:
                    combo.addItem("CUDA 0 (onnxruntime)", "cuda:0")
                return
            import torch

            from ProstateKDLib.device import available_devices

            for device in available_devices():
                if device.startswith("cuda:") and cuda:
                    combo.addItem(f"CUDA {device[5:]}: {torch.cuda.get_device_name(int(device[5:]))}", device)
                elif device == "mps":
                    combo.addItem("Apple MPS (PyTorch)", "mps")
        except Exception as error:  # a broken CUDA install must not break the panel
            logging.warning(f"ProstateKD: cannot list GPUs: {error}")

    def updateDeviceInfo(self) -> None:
        """Say why the chosen device cannot run (onnxruntime for cpu/cuda, PyTorch for mps)."""
        device = self.parameters.device if self.parameters else "auto"
        message = ""
        if device not in ("auto", "cpu"):
            try:
                if device.strip().lower() == "mps":
                    if importlib.util.find_spec("torch") is None:
                        raise DeviceError("device mps needs PyTorch (install the 'PyTorch' extension)")
                    from ProstateKDLib.device import resolve_device

                    resolve_device(device)
                elif importlib.util.find_spec("onnxruntime") is None:
                    message = "onnxruntime is not installed yet: GPUs are listed after the first Apply."
                else:
                    import onnxruntime

                    from ProstateKDLib.onnx_backend import choose_providers

                    choose_providers(device, onnxruntime.get_available_providers())
            except DeviceError as error:
                message = f"<span style='color:#b00'>{error}. Choose another device.</span>"
            except Exception as error:
                message = f"<span style='color:#b00'>{device} cannot be used: {error}</span>"
        self.ui.deviceInfoLabel.text = message
        self.deviceUsable = not message.startswith("<span")

    def updateButtons(self) -> None:
        p = self.parameters
        running = self.job is not None
        # The job is bound to the volume, model and output chosen at Apply: no changing them meanwhile.
        for selector in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.modelComboBox,
                         self.ui.deviceComboBox, self.ui.largestComponentCheckBox):
            selector.enabled = not running
        ready = p is not None and p.input_volume is not None and self.selectedBundle() is not None
        self.ui.applyButton.enabled = ready and not running and self.deviceUsable
        self.ui.cancelButton.enabled = running
        hasOutput = p is not None and p.output_segmentation is not None
        self.ui.editButton.enabled = hasOutput and not running
        self.ui.saveCaseButton.enabled = (hasOutput and not running and p.input_volume is not None
                                          and bool(p.dataset_folder) and bool(p.site))

    # ------------------------------------------------------------ dependencies
    def ensureDependencies(self) -> bool:
        """Check onnxruntime (all that segmenting needs besides Slicer's own packages); offer to install it.

        PyTorch and MONAI are not needed (the models run on onnxruntime) and never installed here.
        """
        if self.dependenciesReady:
            return True
        if importlib.util.find_spec("SimpleITK") is None:
            slicer.util.errorDisplay("SimpleITK is missing from this Slicer; ProstateKD will not reinstall it.")
            return False
        requirements = module_requirements()
        missing = [r for r in requirements if not requirement_satisfied(r)]
        if missing:
            try:
                pipEnsure = _pipEnsure()
                if pipEnsure is not None:  # Slicer >= 5.12: asks, installs with progress, offers a restart
                    pipEnsure(missing, skip_packages=list(NEVER_INSTALL), requester="ProstateKD")
                elif slicer.util.confirmOkCancelDisplay(
                    "ProstateKD needs these Python packages: " + ", ".join(missing)
                    + ".\nInstall them now? (about 20 MB, less than a minute)", "ProstateKD"
                ):
                    with slicer.util.WaitCursor():
                        for requirement in missing:
                            slicer.util.pip_install(requirement)
                else:
                    raise RuntimeError("installation declined")
            except Exception as error:
                still = [r for r in requirements if not requirement_satisfied(r)]
                slicer.util.errorDisplay(
                    f"ProstateKD cannot segment: missing Python packages {', '.join(still or missing)} ({error}). "
                    "Install them from this module (Apply) or with pip_install in the Python console."
                )
                return False
        self.dependenciesReady = True
        self.populateDevices()
        self.updateGUIFromParameters()
        return True

    # ---------------------------------------------------------------- actions
    def onApply(self) -> None:
        if self.job is not None:
            return
        try:  # installing torch or packages can fail in many ways: report it here, change nothing
            ready = self.ensureDependencies()
        except Exception as error:
            logging.exception("ProstateKD: could not prepare the Python packages")
            self.setStatus(f"<span style='color:#b00'>Could not install the Python packages: {error}</span>")
            return
        if not ready:
            self.setStatus("<span style='color:#b00'>ProstateKD cannot segment: Python packages are missing "
                           "(see the message).</span>")
            return
        p = self.parameters
        volume, output = p.input_volume, p.output_segmentation
        self.applyStarted = time.perf_counter()
        self.setStatus("Starting...")
        try:
            job = self.logic.start_segmentation(
                volume, model=self.selectedBundle(), device=p.device, largest_component=p.largest_component
            )
        except ProstateKDError as error:
            self.setStatus(f"<span style='color:#b00'>{error}</span>")
            return
        except Exception as error:
            logging.exception("ProstateKD: could not start the segmentation")
            self.setStatus(f"<span style='color:#b00'>Could not start the segmentation: {error}</span>")
            return
        self.job, self.jobVolume, self.jobOutput = job, volume, output
        self.setStatus("Segmenting in the background process..." if getattr(job, "warm", False)
                       else "Starting the background process (model loading)...")
        self.ui.progressBar.setRange(0, 0)  # busy until the first progress line
        self.ui.progressBar.show()
        self.updateButtons()
        self.timer.start()

    def onPoll(self) -> None:
        job = self.job
        if job is None:
            self.timer.stop()
            return
        for line in job.poll():
            logging.info(f"ProstateKD: {line}")
        if job.fraction > 0:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = int(round(100 * job.fraction))
        if job.message:
            self.setStatus(job.message)
        if job.finished:
            self.timer.stop()
            self.onFinished(job)

    def onFinished(self, job) -> None:
        """Import the result into the volume and output chosen at Apply (not what is selected now)."""
        p = self.parameters
        volume, output = self.jobVolume, self.jobOutput
        if output is not None and output.GetScene() is None:  # removed meanwhile: make a new one
            output = None
        try:
            if volume is None or volume.GetScene() is None:
                job.cleanup()
                raise InputError("the input volume was removed from the scene during the segmentation")
            node, result = self.logic.finish_segmentation(job, volume, output)
        except CancelledError:
            self.setStatus("Cancelled.")
        except ProstateKDError as error:
            self.setStatus(f"<span style='color:#b00'>{error}</span>")
        except Exception as error:
            logging.exception("ProstateKD: segmentation failed")
            self.setStatus(f"<span style='color:#b00'>Segmentation failed: {error}</span>")
        else:
            if p is not None:
                p.output_segmentation = node
            self.applySeconds.append(time.perf_counter() - self.applyStarted)
            seconds = sum(result.timings.values())
            warnings = "".join(f"<br><span style='color:#a60'>Warning: {w}</span>" for w in result.warnings)
            self.setStatus(f"Prostate {result.volume_ml:.1f} ml, {seconds:.1f} s ({result.model}, {result.device})."
                           + warnings)
        finally:
            self.job, self.jobVolume, self.jobOutput = None, None, None
            self.ui.progressBar.hide()
            self.updateButtons()

    def onCancel(self) -> None:
        """Kill the worker at once (a fresh one starts); the next poll reports the cancellation."""
        if self.job is not None:
            self.job.cancel()
            self.setStatus("Cancelling...")

    def stopJob(self) -> None:
        """Kill the process and forget it (scene closing, module reloaded): nothing is imported."""
        self.timer.stop()
        if self.job is not None:
            self.job.cleanup()
            self.job, self.jobVolume, self.jobOutput = None, None, None

    def onEdit(self) -> None:
        p = self.parameters
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.output_segmentation)
        if p.input_volume is not None:
            editor.setSourceVolumeNode(p.input_volume)  # Slicer >= 5.4

    def onSaveCase(self) -> None:
        p = self.parameters
        try:
            case = self.logic.save_training_case(p.input_volume, p.output_segmentation, p.dataset_folder, p.site)
        except ProstateKDError as error:
            self.ui.saveStatusLabel.text = f"<span style='color:#b00'>{error}</span>"
            return
        self.ui.saveStatusLabel.text = f"Saved {case.case_id} in {p.dataset_folder} (row added to {case.index.name})."

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        slicer.app.processEvents()


def _pipEnsure():
    """``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or None."""
    try:
        import slicer.packaging

        return slicer.packaging.pip_ensure
    except (ImportError, AttributeError):
        return None


class ProstateKDTest(ScriptedLoadableModuleTest):
    """The whole scenario on the bundled phantom: load, segment, check, save as a training case."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        """Reload and Test calls this directly (no unittest runner): a skip must not read as a failure."""
        self.setUp()
        missing = self.missingPackages()
        if missing:
            message = (f"ProstateKD self-test NOT RUN: {', '.join(missing)} not installed in this Slicer. "
                       "Open the ProstateKD module and click Apply once to install them, then run the test again.")
            logging.warning(message)
            self.delayDisplay(message)
            return
        self.test_segment_and_save_training_case()

    @staticmethod
    def missingPackages() -> list:
        """The packages the self-test needs that this Python lacks (onnxruntime only: no torch, no MONAI)."""
        return [name for name in ("onnxruntime",) if importlib.util.find_spec(name) is None]

    def test_segment_and_save_training_case(self) -> None:
        import numpy as np
        import SimpleITK as sitk

        missing = self.missingPackages()
        if missing:  # under a unittest runner (CTest) this is a proper skip
            self.skipTest(f"{', '.join(missing)} not installed in this Slicer (open the module and click Apply once)")
        samples = Path(__file__).resolve().parent / "Resources" / "Samples"
        self.delayDisplay("Loading the real sample case (PROMISE12 Case13)")
        volume = slicer.util.loadVolume(str(samples / "PROMISE12_HK_Case13.nii.gz"))
        logic = ProstateKDLogic(slicer.mrmlScene)

        self.delayDisplay("Segmenting with the default model (in this process)")
        node, result = logic.segment(volume, device="cpu")
        segmentation = node.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segment = segmentation.GetNthSegment(0)
        self.assertEqual(segment.GetName(), "Prostate")
        self.assertIn("SCT^41216001^Prostate", segment_terminology(segment))
        self.assertTrue(10 < result.volume_ml < 80, f"implausible gland volume {result.volume_ml:.1f} ml")
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(samples / "PROMISE12_HK_Case13_segmentation.nii.gz"))) > 0
        mask = sitk.GetArrayFromImage(result.mask) > 0
        dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
        self.assertGreater(dice, 0.75)

        self.delayDisplay("Segmenting again in the warm background worker")
        try:
            job = logic.start_segmentation(volume, device="cpu")
            job.wait(timeout=600)
            node2, _ = logic.finish_segmentation(job, volume)
        finally:
            logic.close()
        from ProstateKDLib.slicer_logic import segmentation_node_to_mask

        background = sitk.GetArrayFromImage(segmentation_node_to_mask(node2, volume, slicer.mrmlScene))
        np.testing.assert_array_equal(background, mask.astype(np.uint8))

        self.delayDisplay("Saving as a training case")
        with tempfile.TemporaryDirectory() as folder:
            first = logic.save_training_case(volume, node, folder, "PHANTOM")
            second = logic.save_training_case(volume, node, folder, "PHANTOM")
            self.assertEqual((first.case_id, second.case_id), ("PHANTOM/Case00", "PHANTOM/Case01"))
            self.assertTrue(first.image.is_file() and first.label.is_file())
            rows = (Path(folder) / "dataset_index.csv").read_text().splitlines()
            self.assertEqual(len(rows), 3)
            from ProstateKDLib.datasets import index_multisite

            self.assertEqual([r.case_id for r in index_multisite(folder)], ["PHANTOM/Case00", "PHANTOM/Case01"])
        self.delayDisplay("ProstateKD test passed")
