"""TensorRT's build progress (IProgressMonitor) as a rich progress bar: one row per phase."""

from __future__ import annotations


def progress_monitor_factory(trt, progress):
    """A factory of trt.IProgressMonitor objects that draw on `progress` (rich.progress.Progress).

    TensorRT calls phase_start/step_complete/phase_finish from the building thread; nested
    phases get indented rows that disappear when they finish.
    """

    class RichMonitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.tasks: dict[str, int] = {}
            self.depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.depth[phase_name] = depth
            self.tasks[phase_name] = progress.add_task(
                "  " * depth + phase_name, total=max(int(num_steps), 1)
            )

        def step_complete(self, phase_name, step):
            task = self.tasks.get(phase_name)
            if task is not None:
                progress.update(task, completed=int(step) + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            task = self.tasks.pop(phase_name, None)
            self.depth.pop(phase_name, None)
            if task is not None:
                progress.remove_task(task)

    return RichMonitor
