"""Things found by name (LeRobot's `register_subclass`): a class registers itself with a decorator, and a
command finds it by the name the user typed. A name not registered yet is looked up as a module of the
registry's package (`module_pattern`), so a new kind of thing is one new file and nothing else changes."""

import importlib
import pkgutil

from core.errors import UserError


class Registry:
    def __init__(self, kind: str, package: str, module_pattern: str = "{name}"):
        self.kind = kind  # what the names name, for messages: "policy", "training task"
        self.package = package  # where the modules of registered classes live
        self.module_pattern = module_pattern  # the module of name N inside the package
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: `@POLICIES.register("expert")`; sets the class's `name`."""

        def decorate(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice: {self._classes[name]} and {cls}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type:
        if name not in self._classes:
            module = f"{self.package}.{self.module_pattern.format(name=name)}"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != module:
                    raise
        if name not in self._classes:
            raise UserError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}")
        return self._classes[name]

    def names(self) -> list[str]:
        """Every name, including those of the package's modules not imported yet."""
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        return sorted(self._classes)
