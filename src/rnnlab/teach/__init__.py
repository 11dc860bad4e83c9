"""The teaching tools: what a recurrent model is made of, and what it does at each of its T steps.

    explain, explain_views   parameters, shapes, FLOPs and memory, the equations with the shapes filled in,
                             the misreadings answered by running the model; and how they are drawn
                             (the unrolled loop as text and SVG, the Rich tables of `rnnlab explain`)
    states, states_views     the hidden states of one sequence as a p × T matrix (`Inspection`); and how
                             it is drawn (the heatmap as PNG/SVG, the terminal's table of `rnnlab inspect`)
    elman                    Elman's (1990) experiments: the generated streams (`elman.data`), training by
                             truncated backpropagation through time and the run folders
                             (`elman.experiments`), the report and its figures (`elman.views`)

Each `*_views` module draws what its computing module returns; no computing module imports a view.
"""
