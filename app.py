"""Darwin's entry point, on a Space and locally: `python app.py`."""

from ui.app import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
