"""Word lists behind the text signals: cue words (lower case, in the languages users most often
write to a router in) and the default domain keywords. Single words are matched against the set
of a prompt's words; phrases by substring. Edit here, not in the scoring code."""

from __future__ import annotations


def _words(text: str) -> frozenset[bytes]:
    return frozenset(w.encode() for w in text.split())


# Words that ask for formal reasoning: proof, derivation, deduction.
REASONING = _words(
    """
    prove proof proofs derive derivation deduce deduction infer justify justification
    rigorous rigorously formally logic logical logically puzzle paradox contradiction
    counterexample induction theorem lemma hypothesis hypotheses
    demonstrate generalise generalize guarantee correctness optimal optimality
    beweise beweisen beweis herleiten folgere begründe begründen
    démontre démontrer démonstration prouve prouver justifie justifier
    demuestra demostrar demostración justifica justificar razona
    dimostra dimostrare dimostrazione giustifica giustificare
    prove demonstre demonstrar demonstração justifique
    bewijs bewijzen
    докажите докажи доказательство
    """
)
REASONING_PHRASES = ("show that", "prove that", "step by step", "for all", "for every",
                     "if and only if", "there exists", "derive the", "show every step",
                     "showing every step", "reason through")  # fmt: skip

# Words that ask for analysis: comparison, assessment, trade-offs, recommendations.
ANALYSIS = _words(
    """
    analyse analyze analysis analyses assess assessment evaluate evaluation compare comparison
    contrast critique critically critical implications implication tradeoff tradeoffs
    trade-off trade-offs weigh strategy strategic architecture design optimise optimize
    optimisation optimization diagnose root-cause investigate consequences risks risk pros
    cons recommend recommendation recommendations nuanced thoroughly impact swot framework
    analysieren analysiere analyse bewerte bewerten vergleiche vergleichen abwägen vor- nachteile
    analyser évaluer évalue comparer compare avantages inconvénients
    analizar analiza evaluar evalúa comparar compara ventajas desventajas
    analizzare analizza valutare valuta confrontare confronta vantaggi svantaggi
    analisar analise avaliar avalie vantagens desvantagens
    analyseer analyseren vergelijk vergelijken
    """
)

# Verbs that ask for something to be produced (an answer of some length).
TASK = _words(
    """
    write draft compose create generate explain describe summarise summarize summary rewrite
    outline suggest list turn review build implement develop design plan refactor debug
    tips ideas advice recommend
    schreibe schreib erkläre erklären beschreibe erstelle fasse verfasse
    écris écrire explique expliquer décris rédige rédiger crée résume
    escribe escribir explica explicar describe redacta crea resume desarrolla
    scrivi scrivere spiega spiegare descrivi crea riassumi implementa
    escreva escrever explique explicar descreva crie resuma
    schrijf schrijven leg beschrijf maak
    napisz wyjaśnij opisz объясни напиши опиши
    """
)

TASK_PHRASES = ("difference between", "how does", "how do i", "how can i", "how should",
                "what should", "what are some", "unterschied zwischen", "différence entre",
                "diferencia entre", "differenza tra", "diferença entre")  # fmt: skip

# Scripts without spaces between words: cues found by substring, per signal.
CJK_CUES = {
    "reasoning": ("证明", "証明", "推导", "導出"),
    "analysis": ("分析", "比较", "评估", "比較", "評価"),
    "task": ("写", "説明", "说明", "実装", "書", "作成", "实现"),
    "code": ("Python", "函数", "関数", "コード", "代码", "SQL", "API"),
    "math": ("方程", "积分", "概率", "素数", "証明", "证明", "整数"),
    "chat": ("こんにちは", "你好", "ありがとう", "谢谢", "どこ", "哪里", "什么是"),
}

# Words that mark maths.
MATH = _words(
    """
    prove theorem lemma corollary integral integrals integrate derivative derivatives
    differentiate equation equations inequality inequalities polynomial polynomials matrix
    matrices eigenvalue eigenvalues eigenvector determinant vector vectors probability
    probabilities expected variance binomial combinatorics permutations combinations
    factorial prime primes modulo divisible divisibility congruence induction converge
    converges convergent convergence logarithm logarithms sqrt sin cos tan geometry
    triangle radius hypotenuse algebra calculus topology bijection injective surjective
    irrational integer integers reals solve solutions recurrence
    beweis gleichung gleichungen integral ableitung wahrscheinlichkeit matrix primzahl
    lösungen dreiecks innenwinkel
    théorème équation intégrale dérivée probabilité matrice premier démonstration récurrence
    entier dés
    teorema ecuación ecuaciones integral derivada probabilidad matriz primo demostración
    subconjuntos sistema
    equazione integrale derivata probabilità matrice dimostrazione funzione iniettiva
    equação integral derivada probabilidade matriz demonstração polígono ângulos
    иррациональное число уравнение
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
    kurz kurze bref brève breve corto rápido
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
