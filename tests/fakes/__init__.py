"""Real servers on loopback for tests: a Label Studio-like API and a plain file server.

Use them as context managers (`with FakeLabelStudio() as ls: ...`); each binds a free
127.0.0.1 port and runs uvicorn in a thread, so clients under test speak real HTTP.
"""

from fakes._server import ServerThread, free_port
from fakes.files import FakeFileServer
from fakes.labelstudio import FakeLabelStudio

__all__ = ["FakeFileServer", "FakeLabelStudio", "ServerThread", "free_port"]
