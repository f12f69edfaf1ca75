"""Figures drawn with any matplotlib backend come back as images, as in OpenAI's sandbox.

The kernel's default (inline) backend shows what `plt.show()` draws; code written for scripts often
switches to a non-interactive backend first (`matplotlib.use("Agg")`), where `plt.show()` does
nothing, or never calls it. This snippet, run in every kernel when it starts, shows the figures
still open at the end of each cell as PNG images and closes them (once the inline backend has shown
its own), and silences matplotlib's warning that such a backend cannot show.
"""

SHOW_OPEN_FIGURES = """
def __ag_show_open_figures(result=None):
    import io, sys
    pyplot = sys.modules.get('matplotlib.pyplot')
    if pyplot is None or 'inline' in pyplot.get_backend() or not pyplot.get_fignums():
        return
    from IPython.display import Image, display
    for number in pyplot.get_fignums():
        png = io.BytesIO()
        pyplot.figure(number).savefig(png, format='png', bbox_inches='tight')
        display(Image(png.getvalue()))
    pyplot.close('all')
def __ag_register_figures_hook():
    import warnings
    warnings.filterwarnings('ignore', message='.*non-interactive, and thus cannot be shown')
    events = get_ipython().events
    for hook in list(events.callbacks['post_run_cell']):
        if getattr(hook, '__name__', '') == '__ag_show_open_figures':
            events.unregister('post_run_cell', hook)
    events.register('post_run_cell', __ag_show_open_figures)
__ag_register_figures_hook()
del __ag_register_figures_hook, __ag_show_open_figures
"""
