class Driver:
    def run_tests(self) -> None:
        raise NotImplementedError
