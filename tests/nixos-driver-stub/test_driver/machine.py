"""Signatures of the driver's machine API (the subset RAVE's test uses)."""


class Machine:
    name: str

    def start(self) -> None:
        raise NotImplementedError

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: int | None = 900,
    ) -> tuple[int, str]:
        raise NotImplementedError

    def succeed(self, *commands: str, timeout: int | None = None) -> str:
        raise NotImplementedError

    def fail(self, *commands: str, timeout: int | None = None) -> str:
        raise NotImplementedError

    def wait_until_succeeds(self, command: str, timeout: int = 900) -> str:
        raise NotImplementedError

    def wait_until_fails(self, command: str, timeout: int = 900) -> str:
        raise NotImplementedError

    def wait_for_unit(self, unit: str, user: str | None = None, timeout: int = 900) -> None:
        raise NotImplementedError

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: int = 900) -> None:
        raise NotImplementedError

    def wait_for_file(self, filename: str, timeout: int = 900) -> None:
        raise NotImplementedError

    def systemctl(self, q: str, user: str | None = None) -> tuple[int, str]:
        raise NotImplementedError


class QemuMachine(Machine):
    pass
