class Logger:
    def log(self, message: str) -> None:
        raise NotImplementedError
