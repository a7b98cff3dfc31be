"""Word lists behind the text signals: cue words (lower case, in the languages users most often
write to a router in) and the default domain keywords. Single words are matched against the set
of a prompt's words; phrases by substring. Edit here, not in the scoring code."""

from __future__ import annotations


def _words(text: str) -> frozenset[bytes]:
    return frozenset(w.encode() for w in text.split())


# Words that ask for reasoning or analysis rather than recall.
REASONING = _words(
    """
    analyse analyze analysis analyses assess assessment evaluate evaluation compare comparison
    contrast critique critically critical justify justification implications implication
    tradeoff tradeoffs trade-off trade-offs reason reasoning rigorous rigorously derive
    derivation deduce infer inference prove proof proofs demonstrate hypothesis hypotheses
    counterargument counterarguments weigh strategy strategic architecture design optimise
    optimize optimisation optimization diagnose root-cause investigate explain why
    consequences risks pros cons recommend recommendation nuanced thoroughly
    analysieren analysiere bewerte bewerten vergleiche vergleichen begründe begründen beweise
    beweisen herleiten abwägen warum
    analyser analyse évaluer évalue comparer compare justifier justifie démontrer démontre
    prouver prouve pourquoi
    analizar analiza evaluar evalúa comparar compara justificar justifica demostrar demuestra
    por qué
    analizzare analizza valutare valuta confrontare confronta giustificare giustifica
    dimostrare dimostra perché
    analisar analise avaliar avalie comparar justificar demonstrar demonstre
    analyseer analyseren vergelijk vergelijken bewijs bewijzen waarom
    """
)

# Words that mark maths.
MATH = _words(
    """
    prove theorem lemma corollary integral integrals integrate derivative derivatives
    differentiate equation equations inequality inequalities polynomial polynomials matrix
    matrices eigenvalue eigenvalues eigenvector determinant vector vectors probability
    probabilities expected variance binomial combinatorics permutations combinations
    factorial prime primes modulo divisible divisibility congruence induction limit limits
    converge converges convergence series sequence logarithm logarithms sqrt sin cos tan
    geometry triangle circle radius hypotenuse algebra calculus topology bijection
    injective surjective irrational rational integer integers real-valued solve
    beweis gleichung integral ableitung wahrscheinlichkeit matrix primzahl
    théorème équation intégrale dérivée probabilité matrice nombre premier démonstration
    teorema ecuación integral derivada probabilidad matriz primo demostración
    equazione integrale derivata probabilità matrice dimostrazione
    equação integral derivada probabilidade matriz demonstração
    """
)
# Characters and fragments that mark maths notation (counted in the raw text).
MATH_MARKS = ("\\frac", "\\sum", "\\int", "\\sqrt", "\\le", "\\ge", "\\in", "$$", "^2", "^n", "∑",
              "∫", "√", "≤", "≥", "≠", "π", "∞", "∈", "∀", "∃", " mod ", "x^", "f(x)", "dx")  # fmt: skip

# Words that mark programming.
CODE = _words(
    """
    code function functions method class classes variable variables compile compiler
    runtime debug debugging bug bugs refactor refactoring implement implementation api
    endpoint endpoints regex sql query queries database schema python javascript typescript
    java golang rust c++ c# kotlin swift ruby php bash shell script scripts dockerfile
    kubernetes yaml json html css react django flask fastapi numpy pandas async await
    exception traceback stacktrace segfault null undefined unittest pytest algorithm
    recursion recursive iterator array arrays string strings integer boolean dict list
    git commit repository deploy library framework module package
    funktion klasse fonction classe función clase funzione classe função
    """
)
# Fragments that only code has (counted in the raw text).
CODE_MARKS = ("```", "def ", "class ", "import ", "return ", "=>", "==", "!=", "->", "::",
              "();", "{\n", "}\n", "#include", "console.", "print(", "self.", "const ",
              "function ", "SELECT ", "public ", "fn ", "let ", "</", "Traceback")  # fmt: skip

# Words that say the task has several steps.
STEPS = _words(
    """
    first firstly second secondly third then next finally afterwards subsequently step steps
    stage stages phase phases also additionally furthermore moreover plan workflow pipeline
    sequence iterate iterations milestones
    zuerst dann danach schließlich schritt schritte
    d'abord ensuite puis enfin étape étapes
    primero luego después finalmente paso pasos
    prima poi infine passo passi
    primeiro depois finalmente passo passos
    eerst daarna vervolgens tenslotte stap stappen
    """
)
STEP_PHRASES = ("step by step", "step-by-step", "after that", "and then", "once you",
                "schritt für schritt", "étape par étape", "paso a paso", "passo dopo passo")  # fmt: skip

# Words that constrain the answer.
CONSTRAINTS = _words(
    """
    must should exactly precisely only never always ensure require requires required
    requirement requirements constraint constraints limit limits maximum minimum max min
    within without avoid include exclude format formatted json yaml csv table markdown
    bullet bullets words characters sentences paragraphs tone audience style strict strictly
    mandatory compliant compliance deadline budget specification spec
    muss müssen sollte genau nur niemals immer
    doit doivent exactement seulement jamais toujours
    debe deben exactamente solo nunca siempre
    deve devono esattamente solo mai sempre
    """
)
CONSTRAINT_PHRASES = ("at least", "at most", "no more than", "no less than", "up to",
                      "less than", "more than", "do not", "don't", "make sure")  # fmt: skip

# Words that promise a long answer, and words that promise a short one.
LONG_OUTPUT = _words(
    """
    essay essays report article articles chapter chapters detailed comprehensive thorough
    in-depth extensive full complete entire whitepaper proposal specification documentation
    tutorial guide curriculum lesson business-plan thesis dissertation story novel
    implement build develop program application app system module library service
    ausführlich detailliert vollständig bericht aufsatz
    détaillé complet rapport dissertation
    detallado completo informe ensayo
    dettagliato completo relazione saggio
    """
)
SHORT_OUTPUT = _words(
    """
    briefly brief short quick quickly one-word one-line concise tl;dr tldr summary-only
    yes no kurz kurze bref brève breve corto rápido
    """
)
SHORT_PHRASES = ("one word", "one sentence", "in a sentence", "yes or no", "short answer",
                 "in one line", "just the", "only the")  # fmt: skip

# Words of small talk and simple lookups.
CHAT = _words(
    """
    hi hello hey thanks thank cheers bye goodbye morning evening ok okay cool great nice
    lol please weather joke capital spell synonym antonym define definition meaning
    translate convert
    hallo danke tschüss bonjour salut merci hola gracias adiós ciao grazie olá obrigado
    obrigada dank bedankt hoi
    """
)
CHAT_PHRASES = ("what is", "who is", "who was", "when was", "when did", "where is", "how many",
                "how much", "how do you say", "what's", "was ist", "wer ist", "qu'est-ce",
                "qui est", "qué es", "quién es", "cos'è", "chi è", "o que é", "wat is")  # fmt: skip

# Default domains: a request matches a domain when any of its keywords is among its words.
DOMAINS: dict[str, frozenset[bytes]] = {
    "legal": _words(
        """
        contract contracts clause clauses liability indemnity indemnification lawsuit litigation
        statute statutory gdpr compliance regulation regulations plaintiff defendant court
        jurisdiction tort negligence lease nda trademark copyright patent attorney lawyer
        legal vertrag klausel haftung gericht contrat clause tribunal contrato cláusula
        contratto clausola tribunale
        """
    ),
    "medical": _words(
        """
        diagnosis diagnose symptom symptoms patient patients dosage dose medication medications
        prescription clinical disease diseases treatment therapy doctor physician hospital
        surgery blood pain fever infection vaccine cancer diabetes allergy
        diagnose symptome patient medikament krankheit symptôme médicament maladie
        síntomas paciente medicamento enfermedad sintomi paziente farmaco malattia
        """
    ),
    "finance": _words(
        """
        invoice invoices tax taxes revenue profit loss accounting audit budget investment
        investments portfolio stock stocks bond bonds dividend interest loan mortgage
        payment payments bank banking iban swift balance ledger cashflow valuation ebitda
        steuer rechnung bilanz impôt facture banque impuesto factura banco tasse fattura banca
        """
    ),
    "code": CODE,
    "math": MATH,
}
