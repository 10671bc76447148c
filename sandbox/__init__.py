"""The local stand-ins used by the demo and the tests (Argo CD API emulator, ...)."""
